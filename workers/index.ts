import { DurableObject } from "cloudflare:workers";

export class CallSession extends DurableObject<Env> {}
export class RelayRegistry extends DurableObject<Env> {}

export default {
  async fetch() {
    return new Response("earshot edge", { status: 200 });
  },
} satisfies ExportedHandler<Env>;
