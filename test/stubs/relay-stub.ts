// A stand-in for the relay's HTTP API, for the edge tests. It runs in Node on 127.0.0.1 and
// answers like a relay, verifying the edge's tickets and signatures with the real protocol
// module, so the tests see what a relay would see.
//
// One stub serves any number of relays. A relay's public URL is a bare origin, as the edge
// demands, `http://{name}.{mode}.relays.test` (stubRelayOrigin); the workerd tests' outbound
// service (vitest.config.ts) sends it here as
//   http://127.0.0.1:{port}/relays/{name}/{mode}{path}
// where mode says how that relay behaves:
//   ok     answers POST /calls with 201 and an SDP answer, PATCH with an sdpfrag, DELETE with 204
//   error  answers POST /calls with 500 and an error envelope
//   hang   never answers POST /calls (the edge's relay timeout must fire)
//   full   answers POST /calls with 503 relay_at_capacity, as a full relay does
//   badoffer answers POST /calls with 400 invalid_offer, as a relay that cannot answer the SDP does
//   dropfail answers POST /calls like ok, but every DELETE with 500 (the edge must retry ends)
//   rebooted answers POST /calls with 403 ticket_stale_boot, as a relay restarted since its last heartbeat
// Each relay checks the edge's tickets and signatures with its own key (derived from the secret
// and its name), and tickets against STUB_BOOT_ID.
// Every request is recorded under the relay's name; `GET /records/{name}` returns them.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { CreateCallRequest, TICKET_HEADER } from "../../protocol/relay-api.ts";
import { deriveRelayKey } from "../../protocol/relay-key.ts";
import { STUB_BOOT_ID, type StubMode, type StubRecord } from "./stub-relays.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../protocol/signed-request.ts";
import { verifyTicket } from "../../protocol/ticket.ts";

export type { StubMode, StubRecord } from "./stub-relays.ts";

export const STUB_ANSWER_SDP = [
  "v=0",
  "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
  "s=-",
  "t=0 0",
  "a=group:BUNDLE 0",
  "a=ice-lite",
  "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
  "c=IN IP4 127.0.0.1",
  "a=mid:0",
  "a=ice-ufrag:stubufrag",
  "a=ice-pwd:stubicepasswordstubicepassword",
  "a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99",
  "a=setup:passive",
  "a=rtpmap:111 opus/48000/2",
  "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
  "",
].join("\r\n");

export const STUB_ANSWER_SDPFRAG = "a=ice-ufrag:stubufrag2\r\na=ice-pwd:stubicepasswordstubicepassword2\r\n";

export interface RelayStub {
  url: string;
  close(): Promise<void>;
}

export async function startRelayStub(secret: string): Promise<RelayStub> {
  const records = new Map<string, StubRecord[]>();
  const hanging = new Set<ServerResponse>();

  const server: Server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      console.error("relay stub:", error);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? "/", "http://stub");
    const body = await readBody(req);

    const recordsMatch = /^\/records\/([\w.-]+)$/.exec(url.pathname);
    if (req.method === "GET" && recordsMatch) {
      return json(res, 200, records.get(recordsMatch[1]!) ?? []);
    }

    const match = /^\/relays\/([\w.-]+)\/(ok|error|hang|full|badoffer|dropfail|rebooted)(\/.*)$/.exec(
      url.pathname,
    );
    if (!match) return json(res, 404, envelope("not_found", "No such stub route."));
    const [, name, mode, path] = match as unknown as [string, string, StubMode, string];
    const record: StubRecord = {
      method: req.method ?? "",
      path,
      contentType: req.headers["content-type"] ?? null,
      body,
      authenticated: false,
    };
    const list = records.get(name) ?? [];
    list.push(record);
    records.set(name, list);

    if (req.method === "POST" && path === "/calls") {
      let parsed: CreateCallRequest | undefined;
      try {
        const result = CreateCallRequest.safeParse(JSON.parse(body));
        if (result.success) parsed = result.data;
      } catch {
        // falls through to the 400 below
      }
      if (!parsed) return json(res, 400, envelope("invalid_request", "Not a CreateCallRequest."));
      record.callId = parsed.call_id;
      record.ticket = header(req, TICKET_HEADER);
      const ticket = await verifyTicket(await deriveRelayKey(secret, name), record.ticket, {
        callId: parsed.call_id,
        // The stub relay's id is its name: the edge must have signed for the relay it chose.
        relayId: name,
        bootId: mode === "rebooted" ? "stub-boot-after-restart" : STUB_BOOT_ID,
        offerSdp: parsed.offer_sdp,
        session: parsed.session,
      });
      record.authenticated = ticket.ok;
      if (!ticket.ok) {
        record.authError = ticket.code;
        return json(
          res,
          ticket.code === "ticket_stale_boot" ? 403 : 401,
          envelope(ticket.code, ticket.message),
        );
      }
      if (mode === "hang") {
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
        return;
      }
      if (mode === "error")
        return json(res, 500, envelope("relay_overloaded", "The stub relay failed on purpose."));
      if (mode === "full")
        return json(res, 503, envelope("relay_at_capacity", "The relay is at capacity (0 calls)."));
      if (mode === "badoffer")
        return json(
          res,
          400,
          envelope("invalid_offer", "The offer must have exactly one audio m-line, found 0."),
        );
      return json(res, 201, { call_id: parsed.call_id, answer_sdp: STUB_ANSWER_SDP });
    }

    const callMatch = /^\/calls\/([\w-]+)$/.exec(path);
    if (callMatch && (req.method === "PATCH" || req.method === "DELETE")) {
      record.callId = callMatch[1];
      const verified = await verifyRequest(
        await deriveRelayKey(secret, name),
        header(req, SIGNATURE_HEADER),
        req.method,
        path,
        body,
      );
      record.authenticated = verified.ok;
      if (!verified.ok) {
        record.authError = verified.message;
        return json(res, 401, envelope("bad_signature", verified.message));
      }
      if (mode === "error" || (mode === "dropfail" && req.method === "DELETE"))
        return json(res, 500, envelope("relay_failed", "The stub relay failed on purpose."));
      if (req.method === "DELETE") return void res.writeHead(204).end();
      res.writeHead(200, { "content-type": "application/trickle-ice-sdpfrag" });
      return void res.end(STUB_ANSWER_SDPFRAG);
    }
    return json(res, 404, envelope("not_found", "No such relay route."));
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function envelope(code: string, message: string) {
  return { error: { type: "relay_error", code, message, param: null } };
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}
