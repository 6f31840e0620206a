// Browser peers measured in headless Chromium: two WarrenPeer instances in one page (one
// clock for both ends), talking directly over a WebRTC data channel, and two more talking
// only through the broker (the WebSocket bridge and the relay queues). One-way latency
// (p50, p99; one message at a time) and throughput (back to back) for 16 B, 1 KiB and
// 64 KiB messages. bench/peer_browser.sh starts `warren serve` and runs this with
//   WARREN_PEER_DEMO  http://127.0.0.1:PORT/peer/demo
//   ROUNDS            rounds per cell (median reported; default 3)
// and prints a Markdown table.
import { chromium } from "playwright-core";

const demo = process.env.WARREN_PEER_DEMO;
const rounds = Number(process.env.ROUNDS || 3);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns"],
});
let code = 0;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(120000);
  await page.goto(demo);
  const rows = await page.evaluate(async (rounds) => {
    const tag = Math.random().toString(36).slice(2, 7);
    const mk = async (name) => {
      const p = new WarrenPeer({ name: `${name}-${tag}`, user: "guest", password: "guest", retryMin: null });
      await p.start();
      return p;
    };
    const [a, b, c, d] = await Promise.all(["bench-a", "bench-b", "bench-c", "bench-d"].map(mk));
    const direct = await a.connect(b.name);
    const t0 = Date.now();
    while (direct.path !== "direct" && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
    if (direct.path !== "direct") throw new Error("no direct path between the two browser peers");
    const relay = await c.connect(d.name, { relayOnly: true });
    const sizes = [[16, "16 B", 1000, 10000], [1024, "1 KiB", 1000, 10000], [65536, "64 KiB", 200, 1000]];
    const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const out = [];
    for (const [size, label, samples, count] of sizes) {
      for (const [path, link, rx] of [["direct", direct, b], ["relayed", relay, d]]) {
        const p50s = [], p99s = [], rates = [];
        for (let r = 0; r < rounds; r++) {
          const body = new Uint8Array(size);
          // Latency: one at a time.
          const lat = [];
          for (let i = 0; i < samples; i++) {
            const got = new Promise((res) => { rx.onmessage = () => res(); });
            const t = performance.now();
            await link.send(body);
            await got;
            lat.push(performance.now() - t);
          }
          lat.sort((x, y) => x - y);
          p50s.push(lat[Math.floor(lat.length * 0.5)]);
          p99s.push(lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))]);
          // Throughput: back to back, until the receiver has the last one.
          let n = 0;
          const all = new Promise((res) => { rx.onmessage = () => { if (++n === count) res(); }; });
          const t = performance.now();
          const sends = [];
          for (let i = 0; i < count; i++) sends.push(link.send(body));
          await Promise.all(sends);
          await all;
          rates.push(count / ((performance.now() - t) / 1000));
        }
        out.push({ label, path, p50: median(p50s), p99: median(p99s), rate: median(rates), size });
      }
    }
    for (const p of [a, b, c, d]) p.close();
    return out;
  }, rounds);
  console.log("| size | path | p50 latency | p99 latency | throughput | MiB/s |");
  console.log("|---|---|---:|---:|---:|---:|");
  for (const r of rows) {
    const us = (ms) => `${Math.round(ms * 1000).toLocaleString("en")} µs`;
    console.log(`| ${r.label} | browser ${r.path} | ${us(r.p50)} | ${us(r.p99)} | ${Math.round(r.rate).toLocaleString("en")} msg/s | ${(r.rate * r.size / 1048576).toFixed(1)} |`);
  }
} catch (e) {
  console.error(`peer bench failed: ${e.message}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
