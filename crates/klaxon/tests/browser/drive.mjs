// Drives the dashboard in headless Chromium (playwright-core, the system's Chromium) for
// crates/klaxon/tests/browser.rs. One scenario per run:
//   node drive.mjs SCENARIO BASE_URL [ARG]
// Environment: KLAXON_TEST_CHROMIUM (the browser), KLAXON_TEST_TOKEN (the token to type in),
// KLAXON_TEST_SECRETS (comma-separated strings that must never appear on the page).
// A scenario that needs the Rust side to act prints `STEP name` and waits for a line on stdin.
// Exit 0 on success; any failure throws with what was expected and what the page showed.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [scenario, base, arg] = process.argv.slice(2);
const WAIT = 15000;

const lines = createInterface({ input: process.stdin });
const pending = [];
const queued = [];
lines.on("line", (l) => (pending.length ? pending.shift()(l) : queued.push(l)));
/** Tells the Rust side to act, and waits until it has. */
function step(name) {
  process.stderr.write(`[${scenario}] step ${name}\n`);
  process.stdout.write(`STEP ${name}\n`);
  return new Promise((resolve) => (queued.length ? resolve(queued.shift()) : pending.push(resolve)));
}

function check(cond, what) {
  if (!cond) throw new Error("expected " + what);
}

const profile = mkdtempSync(join(tmpdir(), "klaxon-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.KLAXON_TEST_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] || (await context.newPage());
const urls = [];
const errors = [];
page.on("request", (r) => urls.push(r.url()));
page.on("pageerror", (e) => errors.push(String(e)));
// The 401s the token scenario provokes are logged by Chromium as resource errors: not bugs.
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
page.on("dialog", (d) => d.accept());

const card = (name) => page.locator(`.card[data-channel="${name}"]`);
async function open() {
  await page.goto(base + "/");
}
async function live() {
  await page.locator("#live.on").waitFor({ timeout: WAIT });
}

const scenarios = {
  /** Every channel has a card with its state, counters and controls; no secret shows; a
   *  phone-sized window needs no sideways scrolling. */
  async cards() {
    await open();
    for (const name of arg.split(",")) {
      const c = card(name);
      await c.waitFor({ timeout: WAIT });
      for (const part of [".badge", ".delivered", ".failed", ".backlog", ".toggle", ".mute", ".test", ".health"]) {
        check(await c.locator(part).count() === 1, `${part} on the card of ${name}`);
      }
    }
    await live();
    await page.locator("#chart-volume polyline, #chart-volume circle").first().waitFor({ timeout: WAIT });
    const text = await page.content() + (await page.innerText("body"));
    for (const s of (process.env.KLAXON_TEST_SECRETS || "").split(",").filter(Boolean)) {
      check(!text.includes(s), `no secret on the page (found ${s.slice(0, 4)}…)`);
    }
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `no sideways scrolling on a phone (overflow ${overflow}px)`);
    // Mute 1 h and back.
    await page.setViewportSize({ width: 1280, height: 900 });
    const name = arg.split(",")[0];
    await card(name).locator("button.mute").click();
    await card(name).locator(".mute-state").waitFor({ timeout: WAIT });
    check((await card(name).locator("button.mute").innerText()) === "Unmute", "an Unmute button once muted");
    await card(name).locator("button.mute").click();
    await card(name).locator(".mute-state").waitFor({ state: "detached", timeout: WAIT });
  },

  /** Switches the channel off with its toggle. */
  async disable() {
    await open();
    await card(arg).waitFor({ timeout: WAIT });
    await card(arg).locator(".toggle").click();
    await page.locator(`.card[data-channel="${arg}"][data-state="disabled"]`).waitFor({ timeout: WAIT });
    check(!(await card(arg).locator(".toggle").isChecked()), "the toggle off");
  },

  /** After a restart the card still shows the channel off. */
  async "expect-disabled"() {
    await open();
    await page.locator(`.card[data-channel="${arg}"][data-state="disabled"]`).waitFor({ timeout: WAIT });
    check(!(await card(arg).locator(".toggle").isChecked()), "the toggle still off");
    check(await card(arg).locator("button.test").isDisabled(), "no test on a disabled channel");
  },

  /** "Send test" shows the outcome on the card. */
  async "send-test"() {
    await open();
    await card(arg).locator("button.test").click();
    const res = card(arg).locator(".test-result.delivered");
    await res.waitFor({ timeout: WAIT });
    check((await res.innerText()).includes("delivered"), "the outcome on the card");
  },

  /** A dead letter's Retry puts it back; the page sees it delivered, live. */
  async "retry-dead"() {
    await open();
    const row = page.locator("#dead tbody tr[data-delivery]").first();
    await row.waitFor({ timeout: WAIT });
    const id = await row.getAttribute("data-delivery");
    await live();
    await step("dead-letter-listed");
    await row.locator("button.retry").click();
    await page.locator(`#deliveries tr[data-delivery="${id}"] .status.delivered`).waitFor({ timeout: WAIT });
    await page.locator(`#dead tbody tr[data-delivery="${id}"]`).waitFor({ state: "detached", timeout: WAIT });
    // The detail view shows both attempts: the failed one and the retry.
    await page.locator(`#deliveries tr[data-delivery="${id}"]`).click();
    await page.locator("#detail tr.attempt").nth(1).waitFor({ timeout: WAIT });
    const attempts = await page.locator("#detail tr.attempt").count();
    check(attempts === 2, `two attempts in the detail view, saw ${attempts}`);
    await page.click("#detail-close");
    // A new dead letter shows up by itself; "Retry all" clears the list.
    await step("another-dead");
    await page.locator("#dead tbody tr[data-delivery]").first().waitFor({ timeout: WAIT });
    await page.click("#retry-all");
    await page.locator("#dead tbody tr.empty").waitFor({ timeout: WAIT });
  },

  /** A notification sent while the page is open appears without a reload. */
  async live() {
    await open();
    await live();
    const marker = await step("send");
    const row = page.locator("#deliveries tbody tr", { hasText: marker.trim() });
    await row.locator(".status.delivered").waitFor({ timeout: WAIT });
    // The filters apply to live rows too: text search hides what does not match.
    await page.fill("#f-text", "no-such-text-anywhere");
    check(!(await row.isVisible()), "the text search to hide the row");
    await page.fill("#f-text", marker.trim());
    check(await row.isVisible(), "the text search to show the row");
  },

  /** With a token configured, the page asks for it, keeps it for the tab only, and works. */
  async token() {
    await open();
    const dlg = page.locator("#login[open]");
    await dlg.waitFor({ timeout: WAIT });
    await page.fill("#token-input", "wrong-token");
    await page.click("#token-submit");
    await page.locator("#login-error:not([hidden])").waitFor({ timeout: WAIT });
    await page.fill("#token-input", process.env.KLAXON_TEST_TOKEN);
    await page.click("#token-submit");
    await card(arg).waitFor({ timeout: WAIT });
    await live();
    await card(arg).locator("button.test").click();
    await card(arg).locator(".test-result.delivered").waitFor({ timeout: WAIT });
    const stored = await page.evaluate(() => [sessionStorage.getItem("klaxon.token"), localStorage.length, document.cookie]);
    check(stored[0] === process.env.KLAXON_TEST_TOKEN && stored[1] === 0 && stored[2] === "", "the token in sessionStorage only");
    check(!urls.some((u) => u.includes(process.env.KLAXON_TEST_TOKEN)), "no token in any URL");
  },

  /** docs/dashboard.png */
  async screenshot() {
    await page.setViewportSize({ width: 1280, height: 1250 });
    await open();
    await live();
    await page.locator("#chart-latency polyline, #chart-latency circle").first().waitFor({ timeout: WAIT });
    await page.waitForTimeout(500);
    await page.screenshot({ path: process.env.KLAXON_SCREENSHOT });
  },
};

let failed = null;
try {
  const run = scenarios[scenario];
  if (!run) throw new Error("no scenario " + scenario);
  await run();
  check(errors.length === 0, "no script errors on the page: " + errors.join("; "));
} catch (e) {
  failed = e;
}
await context.close();
rmSync(profile, { recursive: true, force: true });
lines.close();
if (failed) {
  console.error(`scenario ${scenario} failed: ${failed.message}`);
  process.exit(1);
}
console.log(`scenario ${scenario} ok`);
