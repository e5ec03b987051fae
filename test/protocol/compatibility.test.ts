// The README's compatibility tables stay whole and true to the code: every route the edge serves
// under /v1, every client and server event type the protocol code knows, and every session field
// the schema accepts has a row; every row's status is one of the documented words; and every test
// a row cites exists. A new event, field or route without a row fails here.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ClientEvent, ServerEvent } from "../../protocol/realtime.ts";
import { RealtimeSessionConfig, TranscriptionSessionConfig } from "../../protocol/session.ts";

const ROOT = join(import.meta.dirname, "../..");
const STATUSES = new Set(["yes", "relay", "model", "Earshot", "no"]);

interface Row {
  names: string[];
  status: string;
  proofs: string[];
}

/** The tables of README's "## Compatibility" section, by their "###" heading. */
function compatibilityTables(): Map<string, Row[]> {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("\n## Compatibility\n");
  expect(start, "README has a Compatibility section").toBeGreaterThan(0);
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const tables = new Map<string, Row[]>();
  let rows: Row[] | null = null;
  for (const line of section.split("\n")) {
    if (line.startsWith("### ")) {
      rows = [];
      tables.set(line.slice(4).trim(), rows);
      continue;
    }
    if (!rows || !line.startsWith("|") || /^\|\s*-/.test(line)) continue;
    const cells = line.split("|").slice(1, -1);
    if (cells[0]!.trim() === "event" || cells[0]!.trim() === "field" || cells[0]!.trim() === "endpoint")
      continue;
    rows.push({
      names: expandNames(backticked(cells[0]!)),
      status: cells[1]!.trim(),
      proofs: backticked(cells[3] ?? ""),
    });
  }
  return tables;
}

function backticked(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
}

/**
 * `.speech_stopped` after `input_audio_buffer.speech_started` is `input_audio_buffer.speech_stopped`;
 * `/reject` after `POST /v1/realtime/calls/{id}/accept` is `POST /v1/realtime/calls/{id}/reject`.
 */
function expandNames(names: string[]): string[] {
  const out: string[] = [];
  for (const name of names) {
    const previous = out.at(-1);
    if (previous && name.startsWith(".")) out.push(previous.slice(0, previous.lastIndexOf(".")) + name);
    else if (previous && name.startsWith("/")) out.push(previous.slice(0, previous.lastIndexOf("/")) + name);
    else out.push(name);
  }
  return out;
}

function namesIn(table: string): Set<string> {
  const rows = compatibilityTables().get(table);
  expect(rows, `README has a "### ${table}" table`).toBeDefined();
  return new Set(rows!.flatMap((row) => row.names));
}

function typesOf(union: { options: readonly unknown[] }): string[] {
  return union.options.flatMap((option) => {
    const type = (option as { shape: { type: { value?: string; options?: string[] } } }).shape.type;
    return type.value !== undefined ? [type.value] : (type.options ?? []);
  });
}

/** "METHOD /path/{id}" for every /v1 route in the edge's router (path constants resolved). */
function edgeRoutes(): string[] {
  const constants = new Map<string, string>();
  for (const file of readdirSync(join(ROOT, "workers"), { recursive: true }) as string[]) {
    if (!file.endsWith(".ts")) continue;
    const source = readFileSync(join(ROOT, "workers", file), "utf8");
    for (const m of source.matchAll(/export const (\w+_PATH) = "([^"]+)"/g)) constants.set(m[1]!, m[2]!);
  }
  const index = readFileSync(join(ROOT, "workers/index.ts"), "utf8");
  const routes: string[] = [];
  for (const m of index.matchAll(/\.(get|post|patch|delete|put)\(\s*(?:"([^"]+)"|(\w+_PATH))/g)) {
    const path = m[2] ?? constants.get(m[3]!);
    expect(path, `the router's ${m[3]} is a path constant`).toBeDefined();
    if (path!.startsWith("/v1/")) routes.push(`${m[1]!.toUpperCase()} ${path!.replace(/:(\w+)/g, "{$1}")}`);
  }
  return routes;
}

describe("README compatibility tables", () => {
  it("have a row for every /v1 route the edge serves", () => {
    const rows = [...namesIn("Endpoints")].map((name) => name.replace(/\?.*$/, "").replace(/ \(.*$/, ""));
    const routes = edgeRoutes();
    expect(routes.length).toBeGreaterThan(5);
    for (const route of routes) expect(rows, route).toContain(route);
  });

  it("have a row for every client event the relay knows, and conversation.item.retrieve", () => {
    const rows = namesIn("Client events (on `oai-events`, or on the sideband)");
    for (const type of [...typesOf(ClientEvent), "conversation.item.retrieve"])
      expect(rows, type).toContain(type);
  });

  it("have a row for every server event the relay knows", () => {
    const rows = namesIn("Server events");
    const types = typesOf(ServerEvent);
    expect(types).toContain("response.output_audio.delta");
    for (const type of types) expect(rows, type).toContain(type);
  });

  it("have a row for every session field the schema accepts, down to audio.input and audio.output", () => {
    const rows = namesIn("Session fields (`client_secrets`, multipart `calls`, `session.update`)");
    const audio = RealtimeSessionConfig.shape.audio.unwrap();
    const fields = [
      ...Object.keys(RealtimeSessionConfig.shape).filter((key) => key !== "audio"),
      ...Object.keys(TranscriptionSessionConfig.shape).filter((key) => key !== "audio"),
      ...Object.keys(audio.shape.input.unwrap().shape).map((key) => `audio.input.${key}`),
      ...Object.keys(audio.shape.output.unwrap().shape).map((key) => `audio.output.${key}`),
    ];
    for (const field of fields) expect(rows, field).toContain(field);
  });

  it("give every row a documented status and cite tests that exist", () => {
    const tables = compatibilityTables();
    expect(tables.size).toBe(4);
    for (const [table, rows] of tables) {
      for (const row of rows) {
        expect(STATUSES, `${table}: ${row.names.join(", ")}`).toContain(row.status);
        expect(row.proofs.length, `${table}: ${row.names.join(", ")} cites a test`).toBeGreaterThan(0);
        for (const proof of row.proofs) expect(existsSync(join(ROOT, proof)), proof).toBe(true);
      }
    }
  });
});
