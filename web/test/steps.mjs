// How the browser scripts report: `ok: ...` for each check that held; the first
// failure as `failed: ...` with exit code 1, after which `cleanup` still runs.
export const ok = (what) => console.log(`ok: ${what}`);

export async function steps(checks, cleanup) {
  try {
    await checks();
  } catch (error) {
    console.log(`failed: ${error.message ?? error}`);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
}
