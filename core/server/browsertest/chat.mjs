// Drives the mypt page in headless Chromium: pick a model, send a message,
// watch the reply stream in, take a screenshot. Prints one JSON line.
//
// usage: node chat.mjs URL MODEL SCREENSHOT USER_DATA_DIR
import { chromium } from "playwright-core";

const [url, model, screenshot, userDataDir] = process.argv.slice(2);
if (!userDataDir) {
  console.error("usage: node chat.mjs URL MODEL SCREENSHOT USER_DATA_DIR");
  process.exit(2);
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1200, height: 800 },
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  await page.goto(url);
  await page.waitForSelector(`#model option[value="${model}"]`, { state: "attached", timeout: 15000 });
  await page.selectOption("#model", model);
  await page.fill("#temperature", "1");
  await page.fill("#max_new_tokens", "24");
  await page.fill("#seed", "1");

  // Record every text the reply shows while it is still streaming.
  await page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => {
      const m = document.querySelector(".msg.assistant.streaming .text");
      if (m && window.__seen[window.__seen.length - 1] !== m.textContent) window.__seen.push(m.textContent);
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  await page.fill("#message", "Hi there");
  await page.click("#send");
  await page.waitForSelector('.msg.assistant[data-done="true"]', { timeout: 60000 });
  const reply = await page.textContent(".msg.assistant .text");
  const status = await page.textContent("#chat-status");
  const streamed = await page.evaluate(() => window.__seen);
  const userShown = await page.textContent(".msg.user .text");
  await page.screenshot({ path: screenshot, fullPage: true });

  // The Training tab draws the run's curves.
  await page.click("#tab-training");
  await page.waitForFunction(() => /step \d+/.test(document.getElementById("training-status").textContent), null, { timeout: 15000 });
  const training = await page.textContent("#training-status");
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-training.png"), fullPage: true });

  console.log(JSON.stringify({ reply, status, streamed, userShown, training, consoleErrors }));
} finally {
  await context.close();
}
