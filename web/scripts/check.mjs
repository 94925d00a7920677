// Fails when the committed generated code (src/gen) or bundle (dist) is not what the
// sources build to today, naming each file that differs. Used by CI, so that the
// daemon never embeds a stale page.
import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(web, "node_modules/.bin");
// buf finds the protoc-gen-es plugin on PATH, as under `npm run`.
const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` };
const run = (command, args) =>
  execFileSync(join(bin, command), args, { cwd: web, env, stdio: "inherit" });

// The files under `dir`, relative to it; none when it does not exist.
async function files(dir) {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath ?? entry.path, entry.name)));
}

async function readOrNull(path) {
  try {
    return await readFile(path);
  } catch {
    return null;
  }
}

// Every file in either tree that is missing from the other or differs.
async function differences(fresh, committed) {
  const names = new Set([...(await files(fresh)), ...(await files(committed))]);
  const stale = [];
  for (const name of [...names].sort()) {
    const [a, b] = await Promise.all([
      readOrNull(join(fresh, name)),
      readOrNull(join(committed, name)),
    ]);
    if (a === null || b === null || !a.equals(b)) stale.push(name);
  }
  return stale;
}

const scratch = await mkdtemp(join(tmpdir(), "streamd-web-check-"));
try {
  run("buf", ["generate", "--output", scratch]);
  run("tsc", ["--noEmit"]);
  execFileSync(process.execPath, [join(web, "scripts/build.mjs"), join(scratch, "dist")], {
    cwd: web,
    stdio: "inherit",
  });
  const stale = [
    ...(await differences(join(scratch, "src/gen"), join(web, "src/gen"))).map(
      (f) => `src/gen/${f}`,
    ),
    ...(await differences(join(scratch, "dist"), join(web, "dist"))).map((f) => `dist/${f}`),
  ];
  if (stale.length > 0) {
    for (const file of stale) {
      console.error(`web/${file} differs from a fresh build: run \`npm run build\` in web/`);
    }
    process.exitCode = 1;
  } else {
    console.log("web/dist and web/src/gen match their sources");
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}
