// Connection limits of the relay's listeners (the API and the metrics one).

/**
 * Timeouts for a server API whose one client is the edge, which sends each request whole: the
 * headers within 5 s, the whole request within 10 s, 5 s idle between keep-alive requests.
 * Node checks the first two only every `connectionsCheckingInterval` (30 s by default, so a slow
 * header held its connection 20-40 s); every second here.
 */
export const HTTP_LIMITS = {
  headersTimeout: 5_000,
  requestTimeout: 10_000,
  keepAliveTimeout: 5_000,
  connectionsCheckingInterval: 1_000,
} as const;
