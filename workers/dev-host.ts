// Under EARSHOT_DEV the edge runs on a developer's machine (`wrangler dev`), where any web page
// can reach it by DNS rebinding: the page's own name, re-pointed at 127.0.0.1, so its scripts
// count as same-origin and could mint secrets from /dev/client_secret. A page cannot make the
// browser send a loopback name as Host, so a dev edge answers only those names and the ones in
// EARSHOT_ALLOWED_HOSTS. Deployed (EARSHOT_DEV=0), Cloudflare routes by hostname and the Worker
// does not check.
import type { EdgeConfig } from "./config.ts";
import { forbidden } from "./errors.ts";

/** As `URL.hostname` spells them: an IPv6 address keeps its brackets. */
const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "[::1]"]);

const isLoopbackName = (hostname: string) => LOOPBACK_NAMES.has(hostname) || hostname.endsWith(".localhost");

/** Refuses a dev edge's request addressed to a name that is not this machine's (any port). */
export function checkDevHost(config: EdgeConfig, request: Request): void {
  if (!config.dev) return;
  const { hostname } = new URL(request.url);
  if (isLoopbackName(hostname) || config.allowedHosts.has(hostname)) return;
  throw forbidden(
    "host_not_allowed",
    `This local edge (EARSHOT_DEV=1) answers only localhost, 127.0.0.1, [::1], *.localhost and ` +
      `the names in EARSHOT_ALLOWED_HOSTS, not "${hostname}".`,
  );
}
