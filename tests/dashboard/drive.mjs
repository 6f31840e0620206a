// Drives Warren's dashboard in Debian's headless Chromium through playwright-core (the Chrome
// DevTools protocol). tests/dashboard.rs starts the broker and runs this with:
//   WARREN_DASHBOARD_URL   http://127.0.0.1:PORT/
//   WARREN_CLOSE_CONNECTION the client-given name of a connection to close from the page
//   WARREN_MANY_QUEUES     how many queues the broker holds (the paged table must say so)
//   WARREN_SCREENSHOTS     a directory for screenshots (optional)
//   CHROMIUM               the browser (default /usr/bin/chromium)
// Every step prints one line; any failure exits non-zero with the reason.
import { chromium } from "playwright-core";

const url = process.env.WARREN_DASHBOARD_URL;
const shots = process.env.WARREN_SCREENSHOTS;
const closeName = process.env.WARREN_CLOSE_CONNECTION;
const manyQueues = Number(process.env.WARREN_MANY_QUEUES || 0);
const queue = `dashboard-q-${Date.now()}`;
const payload = "hello from the dashboard";

const step = (s) => console.log(`step: ${s}`);
const fail = (s) => {
  throw new Error(s);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(`${m.text()} ${JSON.stringify(m.location())}`));
  page.on("dialog", (d) => d.accept());
  page.setDefaultTimeout(20000);
  const shot = async (name) => {
    if (shots) await page.screenshot({ path: `${shots}/${name}.png` });
  };

  step("the login page");
  await page.goto(url);
  await page.waitForSelector("#login-form");
  await page.fill("#login-user", "guest");
  await page.fill("#login-password", "wrong");
  await page.click("#login-submit");
  await page.waitForFunction(() => (document.querySelector("#login-error")?.textContent ?? "").includes("Login failed"));
  step("a wrong password is refused");
  await page.fill("#login-password", "guest");
  await page.click("#login-submit");
  await page.waitForSelector("#stat-queues");
  if ((await page.textContent("#who")) !== "guest") fail("not signed in as guest");
  step("signed in; the overview shows totals");
  // The refused login logged its 401; from here on, nothing may go wrong.
  errors.length = 0;

  step("declare a queue from the queues page");
  await page.click('nav a[data-view="queues"]');
  await page.waitForSelector("#queues tbody tr[data-name]");
  await shot("queues");
  await page.fill("#new-queue-name", queue);
  await page.click("#new-queue-submit");
  await page.fill("#queues-filter", queue);
  await page.waitForSelector(`#queues tr[data-name="${queue}"]`);
  const readyCell = async () =>
    page.$eval(`#queues tr[data-name="${queue}"]`, (tr) => tr.children[4].textContent);
  if ((await readyCell()) !== "0") fail(`a new queue should be empty, shows ${await readyCell()}`);
  step("the queue is listed, empty");

  step("publish to it from its page");
  await page.click(`#queues tr[data-name="${queue}"] a`);
  await page.waitForSelector("#queue-ready");
  await page.fill("#publish-payload", payload);
  await page.click("#publish-submit");
  await page.waitForFunction(() => (document.querySelector("#publish-result")?.textContent ?? "").includes("routed"));
  step("published, routed");

  step("the count changes in the list");
  await page.click('nav a[data-view="queues"]');
  await page.fill("#queues-filter", queue);
  await page.waitForFunction(
    (q) => {
      const tr = document.querySelector(`#queues tr[data-name="${q}"]`);
      return tr && tr.children[4].textContent === "1";
    },
    queue,
    { timeout: 30000 }
  );
  step("ready: 1");

  step("get the message back");
  await page.click(`#queues tr[data-name="${queue}"] a`);
  await page.waitForSelector("#queue-ready");
  await page.selectOption("#get-ackmode", "ack_requeue_false");
  await page.click("#get-submit");
  await page.waitForSelector("#got .payload");
  const got = await page.textContent("#got .payload");
  if (got !== payload) fail(`got ${JSON.stringify(got)}, published ${JSON.stringify(payload)}`);
  await shot("queue");
  await page.waitForFunction(() => (document.querySelector("#queue-ready")?.textContent ?? "") === "0", null, { timeout: 30000 });
  step("got it; the queue is empty again");

  if (manyQueues) {
    step(`the queues table pages ${manyQueues} queues`);
    const t0 = Date.now();
    await page.click('nav a[data-view="queues"]');
    await page.waitForFunction(() => /page 1 of/.test((document.querySelector("#queues-count")?.textContent ?? "")));
    const info = await page.textContent("#queues-count");
    const rows = await page.$$eval("#queues tbody tr", (r) => r.length);
    console.log(`queues table: "${info}", ${rows} rows, shown in ${Date.now() - t0} ms`);
    if (rows !== 100) fail(`a page should show 100 rows, shows ${rows}`);
    if (!info.replace(/,/g, "").includes(`of ${manyQueues + 1}`) && !info.replace(/,/g, "").includes(`of ${manyQueues}`))
      fail(`the count should say about ${manyQueues} queues: ${info}`);
    await page.click("#queues th:nth-child(7)");
    await page.waitForSelector("#queues th.sorted");
    await page.click(".pager button:last-child");
    await page.waitForFunction(() => /page 2 of/.test((document.querySelector("#queues-count")?.textContent ?? "")));
    step("sorted and paged");
  }

  await page.click('nav a[data-view="connections"]');
  await page.waitForSelector("#connections-count");
  await shot("connections");
  if (closeName) {
    step("close a client's connection");
    const row = `#connections tr:has(td:text-is("${closeName}"))`;
    await page.waitForSelector(row);
    await page.click(`${row} button[data-close]`);
    await page.waitForSelector(row, { state: "detached", timeout: 30000 });
    step("closed");
  }

  step("the definitions page exports");
  await page.click('nav a[data-view="admin"]');
  const download = page.waitForEvent("download");
  await page.click("#export");
  const file = await download;
  if (!(await file.suggestedFilename()).endsWith(".json")) fail("no JSON download");
  await page.waitForFunction(() => (document.querySelector("#definitions-result")?.textContent ?? "").includes("Exported"));

  step("set a policy on the queue from the policies page");
  const policy = `dash-p-${Date.now()}`;
  await page.click('nav a[data-view="policies"]');
  await page.waitForSelector("#new-policy-name");
  await page.fill("#new-policy-name", policy);
  await page.fill("#new-policy-pattern", `^${queue}$`);
  await page.selectOption("#new-policy-applyto", "queues");
  await page.fill("#new-policy-definition", '{"max-length": 7}');
  await page.click("#new-policy-submit");
  await page.waitForSelector(`#policies tbody tr:has(td:text-is("${policy}"))`);
  await shot("policies");
  step("the queue's page shows it in force");
  await page.goto(`${url}#/queue/${encodeURIComponent("/")}/${encodeURIComponent(queue)}`);
  await page.waitForFunction(
    ([p]) => (document.querySelector("#queue-details")?.textContent ?? "").includes(p)
      && (document.querySelector("#queue-details")?.textContent ?? "").includes('"max-length":7'),
    [policy],
    { timeout: 30000 }
  );
  step("delete the policy");
  await page.click('nav a[data-view="policies"]');
  await page.click(`button[data-delete-policies="${policy}"]`);
  await page.waitForSelector(`#policies tbody tr:has(td:text-is("${policy}"))`, { state: "detached" });
  step("policy gone");

  // Tenancy: a vhost with a limit, a user, their permissions, then all of it removed again.
  const vhost = `dash-v-${Date.now()}`;
  const user = `dash-u-${Date.now()}`;
  const row = (table, text) => `#${table} tbody tr:has(td:text-is("${text}"))`;
  step("add a virtual host and a limit on it from the vhosts page");
  await page.click('nav a[data-view="vhosts"]');
  await page.waitForSelector("#vhosts tbody tr[data-name]");
  await page.fill("#new-vhost-name", vhost);
  await page.fill("#new-vhost-description", "made in the browser");
  await page.click("#new-vhost-submit");
  await page.waitForSelector(row("vhosts", vhost));
  await page.fill("#vhost-limit-form-owner", vhost);
  await page.selectOption("#vhost-limit-form-name", "max-publish-rate");
  await page.fill("#vhost-limit-form-value", "1000");
  await page.click("#vhost-limit-form-submit");
  await page.waitForSelector(`${row("vhost-limits", vhost)}:has-text("max-publish-rate = 1,000")`);
  await shot("vhosts");
  step("add a user from the users page");
  await page.click('nav a[data-view="users"]');
  await page.waitForSelector("#users tbody tr[data-name]");
  await page.fill("#new-user-name", user);
  await page.fill("#new-user-password", "s3cret");
  await page.fill("#new-user-tags", "management");
  await page.click("#new-user-submit");
  await page.waitForSelector(`${row("users", user)}:has(td:text-is("management"))`);
  await shot("users");
  step("give the user permissions in the vhost");
  await page.click('nav a[data-view="permissions"]');
  await page.waitForSelector("#permissions tbody tr[data-name]");
  await page.fill("#set-permission-vhost", vhost);
  await page.fill("#set-permission-user", user);
  await page.fill("#set-permission-configure", "^app-");
  await page.click("#set-permission-submit");
  await page.waitForSelector(`${row("permissions", user)}:has(td:text-is("^app-"))`);
  await page.fill("#set-topic-permission-vhost", vhost);
  await page.fill("#set-topic-permission-user", user);
  await page.fill("#set-topic-permission-write", "^orders\\.");
  await page.click("#set-topic-permission-submit");
  await page.waitForSelector(`${row("topic-permissions", user)}:has(td:text-is("amq.topic"))`);
  await shot("permissions");
  step("clear them, delete the user and the vhost");
  await page.click(`button[data-clear-permission="${vhost}/${user}"]`);
  await page.waitForSelector(row("permissions", user), { state: "detached" });
  await page.click(`button[data-clear-topic="${vhost}/${user}"]`);
  await page.waitForSelector(row("topic-permissions", user), { state: "detached" });
  await page.click('nav a[data-view="users"]');
  await page.click(`button[data-delete-user="${user}"]`);
  await page.waitForSelector(row("users", user), { state: "detached" });
  await page.click('nav a[data-view="vhosts"]');
  await page.click(`button[data-delete-vhost="${vhost}"]`);
  await page.waitForSelector(row("vhosts", vhost), { state: "detached" });
  step("gone");

  step("the overview charts draw");
  await page.click('nav a[data-view="overview"]');
  await page.waitForSelector("#stat-queues");
  // Rates need two samples 5 s apart; screenshots wait for a few more.
  await page.waitForTimeout(shots ? 26000 : 6000);
  await shot("overview");
  if (errors.length) fail(`the page logged errors: ${errors.join(" | ")}`);
  step("done");
} catch (e) {
  console.error(`dashboard test failed: ${e.message}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
