// Bundles the dashboard into the three files streamd embeds: OUT_DIR/index.html,
// app.js and app.css. Usage: node scripts/build.mjs OUT_DIR
// The output must be byte-for-byte reproducible, since `npm run check` compares a
// fresh build with the committed dist/.
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(process.argv[2] ?? join(web, "dist"));

await mkdir(out, { recursive: true });
await build({
  absWorkingDir: web,
  entryPoints: [join(web, "src/main.ts")],
  outfile: join(out, "app.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2020",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  // ASCII output: the bytes do not depend on how the file is later decoded.
  charset: "ascii",
  logLevel: "warning",
});
await copyFile(join(web, "src/index.html"), join(out, "index.html"));
await copyFile(join(web, "src/app.css"), join(out, "app.css"));
