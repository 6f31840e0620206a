// Drives Warren's peer demo page (/peer/demo) in Debian's headless Chromium through
// playwright-core. tests/peer_browser.rs starts `warren serve` and a native
// `warren peer listen --name native`, then runs this with:
//   WARREN_PEER_DEMO   http://127.0.0.1:PORT/peer/demo
//   WARREN_PEER_COUNT  messages per phase (1000)
//   WARREN_SCREENSHOTS a directory for the README's screenshot (optional)
//   CHROMIUM           the browser (default /usr/bin/chromium)
// It signs in as the browser peer "browser", sends COUNT messages to "native" over the direct
// path (each reported "direct"), cuts the direct path (closes its RTCPeerConnection) and
// sends COUNT more, which go through the broker ("relayed"). The Rust test checks what the
// native peer printed. Then it waits for the messages the native peer sends back and checks
// their order and paths. Every step prints one line; any failure exits non-zero.
import { chromium } from "playwright-core";

const demo = process.env.WARREN_PEER_DEMO;
const count = Number(process.env.WARREN_PEER_COUNT || 1000);
const shots = process.env.WARREN_SCREENSHOTS;
const step = (s) => console.log(`step: ${s}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Loopback candidates (Chromium leaves them out by default), and host candidates with
  // their addresses rather than mDNS names, so that the native peer on 127.0.0.1 is reachable.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ],
});
let code = 0;
try {
  // With TLS the test's certificate is self-signed.
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 }, ignoreHTTPSErrors: !!process.env.WARREN_PEER_IGNORE_TLS });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
    if (process.env.WARREN_PEER_VERBOSE) console.log(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(30000);
  await page.goto(`${demo}?name=browser&remote=native`);

  step("a user may not claim another's peer name");
  await page.fill("#user", "peer-alice");
  await page.fill("#password", "alice-pw");
  await page.fill("#name", "bob.tab");
  await page.click("#start");
  await page.waitForFunction(() => document.querySelector("#state").textContent.startsWith("refused"));
  const refused = await page.textContent("#state");
  if (!refused.includes("403")) throw new Error(`expected a 403, got ${refused}`);
  await page.fill("#name", "peer-alice.tab");
  await page.click("#start");
  await page.waitForFunction(() => document.querySelector("#state").textContent.startsWith("connected"));
  await page.evaluate(() => window.demo.peer.close());
  await page.fill("#user", "guest");
  await page.fill("#name", "browser");

  step("a wrong password is refused");
  await page.fill("#password", "wrong");
  await page.click("#start");
  await page.waitForFunction(() => document.querySelector("#state").textContent.startsWith("refused"));
  await page.fill("#password", "guest");

  step("sign in as the browser peer");
  await page.click("#start");
  await page.waitForFunction(() => document.querySelector("#state").textContent.startsWith("connected"));

  step(`send ${count} messages to the native peer`);
  const first = await page.evaluate(async (n) => {
    const link = await window.demo.peer.connect("native");
    const t0 = Date.now();
    while (link.path === "connecting" && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
    const paths = {};
    const sends = [];
    for (let i = 0; i < n; i++) sends.push(link.send(`m${i}`, { routingKey: "demo", headers: { phase: "1" } }));
    for (const p of await Promise.all(sends)) paths[p] = (paths[p] || 0) + 1;
    await link.flush();
    return { path: link.path, paths };
  }, count);
  console.log(`phase 1: ${JSON.stringify(first)}`);
  if (first.paths.direct !== count) throw new Error(`phase 1 not all direct: ${JSON.stringify(first)}`);

  step("cut the direct path; the stream carries on through the broker");
  const second = await page.evaluate(async (n) => {
    const link = window.demo.peer.link("native");
    const paths = {};
    const sends = [];
    for (let i = n; i < 2 * n; i++) {
      if (i === n + 10) link.severDirect();
      sends.push(link.send(`m${i}`, { routingKey: "demo", headers: { phase: "2" } }));
    }
    for (const p of await Promise.all(sends)) paths[p] = (paths[p] || 0) + 1;
    await link.flush();
    return { path: link.path, paths };
  }, count);
  console.log(`phase 2: ${JSON.stringify(second)}`);
  if (!(second.paths.relayed > 0)) throw new Error(`phase 2 did not relay: ${JSON.stringify(second)}`);

  step("the link goes back to the direct path by itself");
  await page.waitForFunction(() => window.demo.peer.link("native").path === "direct", null, { timeout: 20000 });
  const third = await page.evaluate(async (n) => {
    const link = window.demo.peer.link("native");
    const paths = {};
    const sends = [];
    for (let i = 2 * n; i < 3 * n; i++) sends.push(link.send(`m${i}`, { routingKey: "demo", headers: { phase: "3" } }));
    for (const p of await Promise.all(sends)) paths[p] = (paths[p] || 0) + 1;
    await link.flush();
    return { path: link.path, paths, returns: link.stats.returnsToDirect };
  }, count);
  console.log(`phase 3: ${JSON.stringify(third)}`);
  if (third.paths.direct !== count || third.returns !== 1) throw new Error(`phase 3 not direct: ${JSON.stringify(third)}`);
  // The native peer's link to this page will be cut here once 30% of its messages came.
  await page.evaluate((n) => {
    window.demo.backCut = false;
    window.demo.backReturned = false;
    window.demo.peer.on("message", (m) => {
      if (m.from === "native-back" && window.demo.received.filter((x) => x.from === "native-back").length === Math.floor(0.3 * n)) {
        window.demo.backCut = true;
        window.demo.peer.link("native-back").severDirect();
      }
    });
    window.demo.peer.on("path", (p) => {
      if (p.remote === "native-back" && p.path === "direct" && window.demo.backCut) window.demo.backReturned = true;
    });
  }, count);
  console.log("sent: done");

  step("the native peer's link, cut by the page, comes back to direct");
  await page.waitForFunction(() => window.demo.backReturned, null, { timeout: 60000 });
  // The Rust side sends the rest of its messages only now.
  console.log("back: direct again");

  step("receive what the native peer sends back");
  await page.waitForFunction((n) => window.demo.received.filter((m) => m.from.startsWith("native-back")).length >= n, count, { timeout: 60000 });
  const back = await page.evaluate(() => window.demo.received.filter((m) => m.from.startsWith("native-back")));
  for (let i = 0; i < back.length; i++) {
    if (back[i].text !== `r${i}`) throw new Error(`message ${i} from the native peer is ${JSON.stringify(back[i].text)}`);
  }
  const backPaths = {};
  for (const m of back) backPaths[m.path] = (backPaths[m.path] || 0) + 1;
  console.log(`received: ${back.length} in order ${JSON.stringify(backPaths)}`);
  if (!backPaths.direct || !backPaths.relayed) throw new Error(`expected direct, then relayed after the cut: ${JSON.stringify(backPaths)}`);
  if (back[back.length - 1].path !== "direct") throw new Error("the native peer's link did not come back to the direct path");
  step("a live stream from the native peer moves the cursor");
  // (Either path: a live link relays if its data channel is slow to open on a loaded machine.)
  await page.waitForFunction(() => (document.querySelector("#cursor-path")?.textContent ?? "").includes("last cursor update"), null, { timeout: 60000 });
  console.log(`cursor: ${await page.textContent("#cursor-path")}`);
  await page.fill("#text", "hello from the browser");
  await page.click("#send");
  await page.waitForFunction(() => (document.querySelector("#log")?.textContent ?? "").includes("me: hello from the browser"));
  if (shots) await page.screenshot({ path: `${shots}/peer-demo.png` });
  if (errors.length) throw new Error(`the page logged errors: ${errors.join(" | ")}`);
  step("done");
} catch (e) {
  console.error(`peer browser test failed: ${e.message}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
