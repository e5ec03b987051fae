// One JSON line per event, so Workers Logs can filter on fields. Secrets and API keys are never
// passed here; callers log ids and hashes.
type Fields = Record<string, unknown>;

function line(level: string, message: string, fields: Fields): string {
  return JSON.stringify({ level, message, ...fields }, (_key, value: unknown) =>
    value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value,
  );
}

export const log = {
  warn(message: string, fields: Fields = {}) {
    console.warn(line("warn", message, fields));
  },
  error(message: string, fields: Fields = {}) {
    console.error(line("error", message, fields));
  },
};
