import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, getHealth, type HealthDocument } from '../api';
import { useLiveStatus } from './useLiveStatus';

export const HEALTH_POLL_INTERVAL_MS = 5_000;

export interface HealthState {
  /** Last health document received, kept while later polls fail. */
  data: HealthDocument | null;
  /** Error from the most recent poll; null once a poll succeeds again. */
  error: ApiError | null;
  /** True until the first poll has finished (successfully or not). */
  loading: boolean;
  /** True while a request is in flight. */
  refreshing: boolean;
  /** When `data` was received. */
  receivedAt: Date | null;
  /** Poll now instead of waiting for the next interval. */
  retry: () => void;
}

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ApiError('CONSOLE_ERROR', `The console failed to read the health report: ${message}`);
}

/**
 * Poll `GET /health` every `intervalMs` (one request at a time; the next
 * starts `intervalMs` after the previous finished), and take each live
 * status the console's event stream brings in between, so a change shows
 * within about a second while the stream is open.
 */
export function useHealth(intervalMs: number = HEALTH_POLL_INTERVAL_MS): HealthState {
  const [data, setData] = useState<HealthDocument | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const [receivedAt, setReceivedAt] = useState<Date | null>(null);
  const [refreshing, setRefreshing] = useState(false);
  const [pollNow, setPollNow] = useState(0);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  useEffect(() => {
    let cancelled = false;
    const controller = new AbortController();

    const poll = async () => {
      setRefreshing(true);
      try {
        const doc = await getHealth(controller.signal);
        if (cancelled) return;
        setData(doc);
        setReceivedAt(new Date());
        setError(null);
      } catch (err) {
        if (cancelled) return;
        setError(toApiError(err));
      } finally {
        if (!cancelled) {
          setLoading(false);
          setRefreshing(false);
          timer.current = setTimeout(poll, intervalMs);
        }
      }
    };

    void poll();
    return () => {
      cancelled = true;
      controller.abort();
      clearTimeout(timer.current);
    };
  }, [intervalMs, pollNow]);

  const live = useLiveStatus();
  useEffect(() => {
    if (!live.status || !live.receivedAt) return;
    setData(live.status.health);
    setReceivedAt(live.receivedAt);
    setError(null);
    setLoading(false);
  }, [live]);

  const retry = useCallback(() => {
    setPollNow((n) => n + 1);
  }, []);

  return { data, error, loading, refreshing, receivedAt, retry };
}
