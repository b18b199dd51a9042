// Drives the admin page of a running Sluice in a real headless browser (Debian's chromium over
// the DevTools protocol) and prints what it saw as one JSON object; tests/e2e_admin_page.rs
// asserts on it. Steps: load the page; read its tables as served; send requests through the
// proxy; wait for the page's own refresh to show them; screenshot; press /quitquitquit and
// dismiss the question (the process must keep serving); press it again and accept.
//
// usage: node admin_page.js ADMIN_URL PROXY_URL REQUESTS SCREENSHOT_PATH
"use strict";
const http = require("node:http");
const puppeteer = require("puppeteer-core");

const [adminUrl, proxyUrl, requestsArg, screenshot] = process.argv.slice(2);
const requests = Number(requestsArg);

function get(url) {
  return new Promise((resolve) => {
    http
      .get(url, { agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      })
      .on("error", (e) => resolve(String(e.code || e.message)));
  });
}

// Every row of a table's body: each cell's text and class.
function table(page, id) {
  return page.$$eval(`#${id} tbody tr`, (rows) =>
    rows.map((r) => Array.from(r.cells).map((c) => ({ text: c.textContent, class: c.className }))),
  );
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.SLUICE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The test runs as root in CI, where chromium's sandbox cannot start; the page is our own.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const out = { dialogs: [] };
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(adminUrl, { waitUntil: "load" });
    out.title = await page.title();
    out.served = { listeners: await table(page, "listeners"), clusters: await table(page, "clusters") };

    out.statuses = [];
    for (let i = 0; i < requests; i++) out.statuses.push(await get(proxyUrl));

    // The page refreshes itself: wait until its cluster table counts every request.
    await page.waitForFunction(
      (n) => {
        let sum = 0;
        for (const r of document.querySelectorAll("#clusters tbody tr")) sum += Number(r.cells[8].textContent);
        return sum === n && Number(document.body.dataset.refreshes || 0) >= 1;
      },
      { timeout: 20000, polling: 100 },
      requests,
    );
    out.refreshed = { listeners: await table(page, "listeners"), clusters: await table(page, "clusters") };
    out.refresh_status = await page.$eval("#refresh-status", (e) => e.textContent);
    await page.screenshot({ path: screenshot, fullPage: true });

    const quit = 'form[action="/quitquitquit"] button';
    page.once("dialog", (d) => {
      out.dialogs.push({ type: d.type(), message: d.message(), answer: "dismiss" });
      d.dismiss();
    });
    await page.click(quit);
    await new Promise((r) => setTimeout(r, 300));
    out.url_after_dismiss = page.url();
    out.proxy_after_dismiss = await get(proxyUrl);

    page.once("dialog", (d) => {
      out.dialogs.push({ type: d.type(), message: d.message(), answer: "accept" });
      d.accept();
    });
    await Promise.all([page.waitForNavigation({ timeout: 10000 }), page.click(quit)]);
    out.url_after_accept = page.url();
    out.quit_answer = await page.evaluate(() => document.body.innerText);
  } catch (e) {
    out.error = String(e && e.stack ? e.stack : e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
})();
