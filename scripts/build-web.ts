// Bundles the browser client and the demo page into web/public/build/, which the Worker
// serves as static assets. wrangler runs this before `dev` and `deploy` ([build] in wrangler.toml).
import { build } from "esbuild";

const root = `${import.meta.dirname}/../`;

await build({
  entryPoints: { demo: `${root}web/src/demo.ts`, "earshot-client": `${root}web/src/earshot-client.ts` },
  outdir: `${root}web/public/build`,
  bundle: true,
  format: "esm",
  target: "es2022",
  sourcemap: true,
  minify: false,
  logLevel: "warning",
});
