import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

vi.mock('@tauri-apps/api/core', () => ({ invoke: vi.fn() }));

import { invoke } from '@tauri-apps/api/core';
import { ApiError, ErrorCodes, getHealth, request, resetEndpoint, subscribeEvents, type LiveStatus } from './api';
import { jsonResponse, sampleHealth } from './test/fixtures';

const invokeMock = vi.mocked(invoke);

async function caught(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error('expected the request to fail');
}

beforeEach(() => {
  resetEndpoint();
  invokeMock.mockReset();
});

afterEach(() => {
  delete (window as unknown as Record<string, unknown>).__TAURI_INTERNALS__;
  resetEndpoint();
});

describe('api client in a browser', () => {
  it('uses same-origin URLs and no Authorization header', async () => {
    const fetchMock = vi.fn().mockResolvedValue(jsonResponse(sampleHealth()));
    vi.stubGlobal('fetch', fetchMock);

    const doc = await getHealth();

    expect(doc.components).toHaveLength(4);
    expect(fetchMock).toHaveBeenCalledTimes(1);
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('/health');
    expect((init.headers as Record<string, string>).Authorization).toBeUndefined();
    expect(invokeMock).not.toHaveBeenCalled();
  });

  it('turns a JSON error document into an ApiError with its code and message', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn().mockResolvedValue(
        jsonResponse(
          { code: 'POLICY_NOT_FOUND', message: 'No IT policy is named "Default".' },
          404,
          'Not Found',
        ),
      ),
    );

    const err = await caught(request('/api/policies/Default'));
    expect(err.code).toBe('POLICY_NOT_FOUND');
    expect(err.message).toBe('No IT policy is named "Default".');
    expect(err.status).toBe(404);
  });

  it('maps an error status without an error document to UNEXPECTED_RESPONSE', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn().mockResolvedValue(new Response('<h1>Bad gateway</h1>', { status: 502, statusText: 'Bad Gateway' })),
    );

    const err = await caught(getHealth());
    expect(err.code).toBe(ErrorCodes.UNEXPECTED_RESPONSE);
    expect(err.status).toBe(502);
    expect(err.message).toContain('502');
  });

  it('maps a network failure to SERVER_UNREACHABLE naming the address', async () => {
    vi.stubGlobal('fetch', vi.fn().mockRejectedValue(new TypeError('Failed to fetch')));

    const err = await caught(getHealth());
    expect(err.code).toBe('SERVER_UNREACHABLE');
    expect(err.status).toBeUndefined();
    expect(err.message).toContain('The Bramble server could not be reached at');
    expect(err.message).toContain(window.location.origin);
  });

  it('maps a request that never answers to SERVER_UNREACHABLE', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(
        (_url: string, init: RequestInit) =>
          new Promise<Response>((_resolve, reject) => {
            init.signal?.addEventListener('abort', () =>
              reject(new DOMException('The operation was aborted.', 'AbortError')),
            );
          }),
      ),
    );

    const err = await caught(request('/health', { timeoutMs: 20 }));
    expect(err.code).toBe('SERVER_UNREACHABLE');
    expect(err.message).toContain('no answer within');
  });

  it('rejects a 2xx answer that is not JSON with INVALID_RESPONSE', async () => {
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(new Response('<!doctype html><html></html>', { status: 200 })));

    const err = await caught(getHealth());
    expect(err.code).toBe(ErrorCodes.INVALID_RESPONSE);
  });

  it('rejects JSON that is not a health document with INVALID_RESPONSE', async () => {
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse({ hello: 'world' })));

    const err = await caught(getHealth());
    expect(err.code).toBe(ErrorCodes.INVALID_RESPONSE);
  });
});

describe('api client in the desktop shell', () => {
  beforeEach(() => {
    (window as unknown as Record<string, unknown>).__TAURI_INTERNALS__ = {};
  });

  it('asks the shell for the endpoint once and sends the launch secret', async () => {
    invokeMock.mockResolvedValue({ base_url: 'http://127.0.0.1:3999/', launch_secret: 's3cret', setup_code: null });
    const fetchMock = vi.fn().mockImplementation(async () => jsonResponse(sampleHealth()));
    vi.stubGlobal('fetch', fetchMock);

    await getHealth();
    await getHealth();

    expect(invokeMock).toHaveBeenCalledTimes(1);
    expect(invokeMock).toHaveBeenCalledWith('console_endpoint');
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('http://127.0.0.1:3999/health');
    expect((init.headers as Record<string, string>)['X-Bramble-Launch']).toBe('s3cret');
    expect((init.headers as Record<string, string>).Authorization).toBeUndefined();
  });

  it('sends no launch header when the shell gives no secret', async () => {
    invokeMock.mockResolvedValue({ base_url: 'http://127.0.0.1:3999', launch_secret: null });
    const fetchMock = vi.fn().mockResolvedValue(jsonResponse(sampleHealth()));
    vi.stubGlobal('fetch', fetchMock);

    await getHealth();

    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('http://127.0.0.1:3999/health');
    expect((init.headers as Record<string, string>)['X-Bramble-Launch']).toBeUndefined();
  });

  it('names the shell-provided address when the server is unreachable', async () => {
    invokeMock.mockResolvedValue({ base_url: 'http://127.0.0.1:3999', launch_secret: null });
    vi.stubGlobal('fetch', vi.fn().mockRejectedValue(new TypeError('Failed to fetch')));

    const err = await caught(getHealth());
    expect(err.code).toBe('SERVER_UNREACHABLE');
    expect(err.message).toContain('could not be reached at http://127.0.0.1:3999');
  });

  it('reports a failing console_endpoint command and asks again next time', async () => {
    invokeMock.mockRejectedValueOnce('no server configured');
    const fetchMock = vi.fn().mockResolvedValue(jsonResponse(sampleHealth()));
    vi.stubGlobal('fetch', fetchMock);

    const err = await caught(getHealth());
    expect(err.code).toBe(ErrorCodes.CONSOLE_ENDPOINT_UNAVAILABLE);
    expect(err.message).toContain('no server configured');
    expect(fetchMock).not.toHaveBeenCalled();

    invokeMock.mockResolvedValueOnce({ base_url: 'http://127.0.0.1:3999', launch_secret: null });
    await expect(getHealth()).resolves.toMatchObject({ version: '0.1.0' });
    expect(invokeMock).toHaveBeenCalledTimes(2);
  });

  it("shows the desktop server's own start-up error as it is", async () => {
    invokeMock.mockRejectedValueOnce({
      code: 'PORT_IN_USE',
      message: '127.0.0.1:3103 is already in use by another program',
    });
    vi.stubGlobal('fetch', vi.fn());

    const err = await caught(getHealth());
    expect(err.code).toBe('PORT_IN_USE');
    expect(err.message).toBe('127.0.0.1:3103 is already in use by another program');
  });
});

/** A streamed `text/event-stream` answer delivered in the given chunks. */
function eventStream(chunks: string[]): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
}

describe('live statuses', () => {
  it('reads status events split across chunks in the desktop window, with the launch secret', async () => {
    (window as unknown as Record<string, unknown>).__TAURI_INTERNALS__ = {};
    invokeMock.mockResolvedValue({ base_url: 'http://127.0.0.1:3999', launch_secret: 'live-secret' });
    const first = JSON.stringify({ health: sampleHealth(), audit_head: 7 });
    const second = JSON.stringify({ health: sampleHealth(), audit_head: 8 });
    const fetchMock = vi
      .fn()
      .mockResolvedValueOnce(
        eventStream([
          ': keep-alive\n\n',
          `event: status\ndata: ${first.slice(0, 20)}`,
          `${first.slice(20)}\n\nevent: status\ndata: not json\n\n`,
          `event: other\ndata: {}\n\nevent: status\ndata: ${second}\n\n`,
        ]),
      )
      .mockResolvedValue(new Response('', { status: 401 }));
    vi.stubGlobal('fetch', fetchMock);
    vi.useFakeTimers();
    try {
      const seen: LiveStatus[] = [];
      const connected: boolean[] = [];
      const stop = subscribeEvents(
        (status) => seen.push(status),
        (open) => connected.push(open),
      );
      await vi.waitFor(() => expect(seen.map((s) => s.audit_head)).toEqual([7, 8]));
      await vi.waitFor(() => expect(connected).toEqual([true, false]));
      const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
      expect(url).toBe('http://127.0.0.1:3999/api/events');
      expect((init.headers as Record<string, string>)['X-Bramble-Launch']).toBe('live-secret');

      // The stream ended: it is opened again after a pause; a signed-out
      // session (401) stops it for good.
      expect(fetchMock).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(3_000);
      expect(fetchMock).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(fetchMock).toHaveBeenCalledTimes(2);
      expect(connected).toEqual([true, false]);
      stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('stops reconnecting once unsubscribed', async () => {
    vi.stubGlobal('fetch', vi.fn().mockRejectedValue(new TypeError('Failed to fetch')));
    vi.useFakeTimers();
    try {
      const stop = subscribeEvents(() => undefined);
      await vi.advanceTimersByTimeAsync(3_000);
      expect(fetch).toHaveBeenCalledTimes(2);
      stop();
      await vi.advanceTimersByTimeAsync(30_000);
      expect(fetch).toHaveBeenCalledTimes(2);
    } finally {
      vi.useRealTimers();
    }
  });
});
