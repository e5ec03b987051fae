// The relay's configuration on its own: defaults, the secret, and RELAY_PROCESSES.
import { availableParallelism } from "node:os";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../relay/config.ts";
import { deriveRelayKey } from "../../protocol/relay-key.ts";
import { TEST_SECRET } from "../support/relay-api.ts";

const KEY = "a".repeat(43);

describe("config", () => {
  const base = { EARSHOT_RELAY_SECRET: TEST_SECRET };
  it("has documented defaults", () => {
    const config = loadConfig(base);
    expect(config).toMatchObject({
      httpPort: 8790,
      udpPorts: [40000, 40999],
      capacity: 100,
      mediaIp: "127.0.0.1",
    });
  });
  it.each([
    ["RELAY_HTTP_PORT", "http"],
    ["RELAY_UDP_PORTS", "40999-40000"],
    ["RELAY_LAT", "91"],
    ["RELAY_PUBLIC_IP", "example.com"],
    ["EARSHOT_EDGE_URL", "ftp://edge"],
  ])("names the bad variable %s", (name, value) => {
    expect(() => loadConfig({ ...base, [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, [name]: value })).toThrow(name);
  });
  it("takes RELAY_BARGE_IN_MIN_SPEECH_MS from 0 to 5000 (default 480), refuses -1 and 5001", () => {
    expect(loadConfig(base).bargeInMinSpeechMs).toBe(480);
    expect(loadConfig({ ...base, RELAY_BARGE_IN_MIN_SPEECH_MS: "0" }).bargeInMinSpeechMs).toBe(0);
    expect(loadConfig({ ...base, RELAY_BARGE_IN_MIN_SPEECH_MS: "5000" }).bargeInMinSpeechMs).toBe(5000);
    for (const value of ["-1", "5001", "soon"])
      expect(() => loadConfig({ ...base, RELAY_BARGE_IN_MIN_SPEECH_MS: value })).toThrow(
        "RELAY_BARGE_IN_MIN_SPEECH_MS",
      );
  });
  it("takes RELAY_RED_DISTANCE from 0 to 2 (default 0), refuses -1 and 3; 0 without the resilience features", () => {
    expect(loadConfig(base).redDistance).toBe(0);
    expect(loadConfig({ ...base, RELAY_RED_DISTANCE: "2" }).redDistance).toBe(2);
    expect(loadConfig({ ...base, RELAY_RED_DISTANCE: "0" }).redDistance).toBe(0);
    expect(loadConfig({ ...base, RELAY_RED_DISTANCE: "1" }).redDistance).toBe(1);
    for (const value of ["-1", "3", "two"])
      expect(() => loadConfig({ ...base, RELAY_RED_DISTANCE: value })).toThrow("RELAY_RED_DISTANCE");
    expect(loadConfig({ ...base, RELAY_NETWORK_RESILIENCE: "0", RELAY_RED_DISTANCE: "2" }).redDistance).toBe(
      0,
    );
  });

  it("requires the relay secret or the relay's own key, not both", () => {
    expect(() => loadConfig({})).toThrow("EARSHOT_RELAY_SECRET");
    expect(() => loadConfig({ ...base, EARSHOT_RELAY_KEY: KEY })).toThrow("EARSHOT_RELAY_KEY");
    expect(() => loadConfig({ EARSHOT_RELAY_KEY: "too-short" })).toThrow("EARSHOT_RELAY_KEY");
  });

  it("takes the relay's own key instead of the secret, for one relay only", async () => {
    const key = await deriveRelayKey(TEST_SECRET, "fra-1");
    expect(loadConfig({ RELAY_ID: "fra-1", EARSHOT_RELAY_KEY: key }).credential).toEqual({
      kind: "key",
      key,
    });
    expect(() =>
      loadConfig({
        RELAY_ID: "fra-1",
        EARSHOT_RELAY_KEY: key,
        RELAY_PROCESSES: "2",
        RELAY_HTTP_PORT: "8790",
      }),
    ).toThrow(/EARSHOT_RELAY_KEY: is one relay id's key/);
  });

  it("refuses a RELAY_PUBLIC_URL that is not a bare origin", () => {
    expect(loadConfig({ ...base, RELAY_PUBLIC_URL: "https://relay.example:8443" }).publicUrl).toBe(
      "https://relay.example:8443",
    );
    for (const url of ["https://relay.example/x", "https://relay.example?a", "https://u:p@relay.example"]) {
      expect(() => loadConfig({ ...base, RELAY_PUBLIC_URL: url })).toThrow("RELAY_PUBLIC_URL");
    }
  });
});

describe("config: RELAY_PROCESSES", () => {
  const base = { EARSHOT_RELAY_SECRET: TEST_SECRET };
  const refusal = (env: Record<string, string>): string => {
    try {
      loadConfig({ ...base, ...env });
    } catch (error) {
      if (error instanceof ConfigError) return error.message;
      throw error;
    }
    throw new Error("expected a ConfigError");
  };

  it("is one in-process relay by default and at 1", () => {
    expect(loadConfig(base).processes).toEqual([]);
    expect(loadConfig({ ...base, RELAY_PROCESSES: "1" }).processes).toEqual([]);
  });

  it("gives each process its own id, HTTP port, public URL port and UDP slice", () => {
    const config = loadConfig({
      ...base,
      RELAY_ID: "fra-1",
      RELAY_PROCESSES: "3",
      RELAY_HTTP_PORT: "8790",
      RELAY_PUBLIC_URL: "https://relay.example:8790",
      RELAY_UDP_PORTS: "40000-40999",
    });
    expect(config.processes.map((p) => [p.index, p.relayId, p.httpPort, p.publicUrl, p.udpPorts])).toEqual([
      [1, "fra-1-1", 8790, "https://relay.example:8790", [40000, 40332]],
      [2, "fra-1-2", 8791, "https://relay.example:8791", [40333, 40665]],
      [3, "fra-1-3", 8792, "https://relay.example:8792", [40666, 40998]],
    ]);
  });

  it("counts a URL's written default port (:443) as a port", () => {
    const config = loadConfig({
      ...base,
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: "8443",
      RELAY_PUBLIC_URL: "https://relay.example:443",
    });
    expect(config.processes.map((p) => p.publicUrl)).toEqual([
      "https://relay.example:443",
      "https://relay.example:444",
    ]);
  });

  it("auto is one per core", () => {
    const config = loadConfig({ ...base, RELAY_PROCESSES: "auto", RELAY_CAPACITY: "2" });
    const cores = Math.min(availableParallelism(), 256);
    // One core: the relay runs in-process, as with RELAY_PROCESSES=1.
    expect(config.processes).toHaveLength(cores > 1 ? cores : 0);
  });

  it("takes 256, refuses 0, 257 and words, naming RELAY_PROCESSES", () => {
    const at256 = loadConfig({
      ...base,
      RELAY_PROCESSES: "256",
      RELAY_HTTP_PORT: "10000",
      RELAY_UDP_PORTS: "40000-40511",
      RELAY_CAPACITY: "2",
    });
    expect(at256.processes).toHaveLength(256);
    expect(at256.processes.at(-1)).toMatchObject({
      relayId: "relay-local-256",
      httpPort: 10255,
      udpPorts: [40510, 40511],
    });
    for (const bad of ["0", "257", "x", "-1", "1.5"])
      expect(refusal({ RELAY_PROCESSES: bad })).toContain("RELAY_PROCESSES");
  });

  it("refuses a UDP range whose slices hold fewer ports than RELAY_CAPACITY calls need", () => {
    // 2 processes x 100 calls: 200 ports is enough, 199 is not.
    const env = { RELAY_PROCESSES: "2", RELAY_CAPACITY: "100" };
    expect(
      loadConfig({ ...base, ...env, RELAY_UDP_PORTS: "40000-40199" }).processes.map((p) => p.udpPorts),
    ).toEqual([
      [40000, 40099],
      [40100, 40199],
    ]);
    const message = refusal({ ...env, RELAY_UDP_PORTS: "40000-40198" });
    expect(message).toContain("RELAY_UDP_PORTS");
    expect(message).toContain("RELAY_PROCESSES=2");
    // Even with no capacity to speak of, a slice is at least 2 ports.
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_CAPACITY: "0", RELAY_UDP_PORTS: "40000-40002" })).toContain(
      "RELAY_UDP_PORTS",
    );
    expect(
      loadConfig({ ...base, RELAY_PROCESSES: "2", RELAY_CAPACITY: "0", RELAY_UDP_PORTS: "40000-40003" })
        .processes,
    ).toHaveLength(2);
  });

  it("refuses what cannot be laid out per process", () => {
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_PUBLIC_URL: "https://relay.example" })).toMatch(
      /RELAY_PUBLIC_URL: needs an explicit port/,
    );
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_HTTP_PORT: "0" })).toContain("RELAY_HTTP_PORT");
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_HTTP_PORT: "65535" })).toContain("RELAY_HTTP_PORT");
    expect(
      loadConfig({ ...base, RELAY_PROCESSES: "2", RELAY_HTTP_PORT: "65534" }).processes[1]!.httpPort,
    ).toBe(65535);
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_PUBLIC_URL: "http://relay.example:65535" })).toContain(
      "RELAY_PUBLIC_URL",
    );
    // Ids stay within the 64 characters the edge accepts: "-2" makes 64 of 62, 65 of 63.
    expect(
      loadConfig({ ...base, RELAY_PROCESSES: "2", RELAY_ID: "r".repeat(62) }).processes[1]!.relayId,
    ).toHaveLength(64);
    expect(refusal({ RELAY_PROCESSES: "2", RELAY_ID: "r".repeat(63) })).toContain("RELAY_ID");
  });
});

describe("RELAY_UDP_PORT (one UDP port per host)", () => {
  const base = { EARSHOT_RELAY_SECRET: TEST_SECRET };
  it("is off by default (per-call ports from RELAY_UDP_PORTS), and on when set", () => {
    expect(loadConfig(base)).toMatchObject({ udpPort: undefined, processIndex: 0 });
    expect(loadConfig({ ...base, RELAY_UDP_PORT: "3478" })).toMatchObject({ udpPort: 3478 });
  });
  it("refuses RELAY_UDP_PORTS beside it, and a port past 65535", () => {
    expect(() => loadConfig({ ...base, RELAY_UDP_PORT: "3478", RELAY_UDP_PORTS: "40000-40999" })).toThrow(
      /RELAY_UDP_PORT: set either it or RELAY_UDP_PORTS/,
    );
    expect(() => loadConfig({ ...base, RELAY_UDP_PORT: "65536" })).toThrow("RELAY_UDP_PORT");
  });
  it("is one port for the whole host with RELAY_PROCESSES > 1 (behind the dispatcher), never port 0", () => {
    const env = { ...base, RELAY_PROCESSES: "2", RELAY_HTTP_PORT: "9000" };
    expect(loadConfig({ ...env, RELAY_UDP_PORT: "65535" }).processes.map((p) => p.udpPort)).toEqual([
      65535, 65535,
    ]);
    // Every process and the dispatcher must agree on it.
    expect(() => loadConfig({ ...env, RELAY_UDP_PORT: "0" })).toThrow(/RELAY_UDP_PORT: must be a fixed port/);
    // The supervisor sets RELAY_UDP_DISPATCHED for its relays; a relay on its own owns its port.
    expect(loadConfig({ ...base, RELAY_UDP_PORT: "3478" }).udpDispatched).toBe(false);
    expect(loadConfig({ ...base, RELAY_UDP_PORT: "3478", RELAY_UDP_DISPATCHED: "1" }).udpDispatched).toBe(
      true,
    );
    // No UDP range to split: RELAY_CAPACITY needs no ports of its own.
    expect(loadConfig({ ...env, RELAY_UDP_PORT: "3478", RELAY_CAPACITY: "5000" }).processes).toHaveLength(2);
  });
});

describe("RELAY_TCP_PORT (ICE-TCP, one port for the host)", () => {
  const base = { EARSHOT_RELAY_SECRET: TEST_SECRET };
  it("is off by default, and on when set, 65535 and 0 included", () => {
    expect(loadConfig(base)).toMatchObject({ tcpPort: undefined });
    expect(loadConfig({ ...base, RELAY_TCP_PORT: "443" })).toMatchObject({ tcpPort: 443 });
    expect(loadConfig({ ...base, RELAY_TCP_PORT: "65535" })).toMatchObject({ tcpPort: 65535 });
    expect(loadConfig({ ...base, RELAY_TCP_PORT: "0" })).toMatchObject({ tcpPort: 0 });
  });
  it("refuses a port past 65535 or not a number, naming the variable", () => {
    expect(() => loadConfig({ ...base, RELAY_TCP_PORT: "65536" })).toThrow("RELAY_TCP_PORT");
    expect(() => loadConfig({ ...base, RELAY_TCP_PORT: "https" })).toThrow("RELAY_TCP_PORT");
  });
  it("stays one port with RELAY_PROCESSES (the supervisor listens; processes advertise it)", () => {
    const config = loadConfig({
      ...base,
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: "9000",
      RELAY_TCP_PORT: "443",
    });
    expect(config.tcpPort).toBe(443);
    expect(config.processes).toHaveLength(2);
  });
});
