// Prints a relay's own key, for a relay host that should hold only that (EARSHOT_RELAY_KEY)
// instead of the deployment's EARSHOT_RELAY_SECRET:
//
//   EARSHOT_RELAY_SECRET=... npm run relay-key -- use1-a euw1-a
//
// The secret is read from the environment, not the command line, so it stays out of shell history.
import { RelayId } from "../protocol/relay-api.ts";
import { deriveRelayKey } from "../protocol/relay-key.ts";

const secret = process.env.EARSHOT_RELAY_SECRET;
const ids = process.argv.slice(2);
if (!secret || secret.length < 16 || ids.length === 0) {
  console.error("usage: EARSHOT_RELAY_SECRET=<the edge's> npm run relay-key -- <relay id>...");
  process.exit(64);
}
for (const id of ids) {
  if (!RelayId.safeParse(id).success) {
    console.error(`not a relay id: ${id}`);
    process.exit(64);
  }
  console.log(`${id} EARSHOT_RELAY_KEY=${await deriveRelayKey(secret, id)}`);
}
