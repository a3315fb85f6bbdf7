import { createContext, useContext } from 'react';
import type { LiveStatus } from '../api';

/** The newest live status (`GET /api/events`) and when it arrived. */
export interface LiveStatusValue {
  status: LiveStatus | null;
  receivedAt: Date | null;
  /** Whether the event stream is open now (else pages rely on polling). */
  connected: boolean;
}

/**
 * Provided by the signed-in console, which holds the one live-status stream;
 * pages read it instead of opening streams of their own.
 */
export const LiveStatusContext = createContext<LiveStatusValue>({
  status: null,
  receivedAt: null,
  connected: false,
});

export function useLiveStatus(): LiveStatusValue {
  return useContext(LiveStatusContext);
}
