// Drives Debian's chromium (Playwright, headless) on ticketvnc's served
// browser viewer, for tests/browser.rs. One command a line on stdin, one
// JSON answer a line on stdout:
//   open URL [ENC,ENC,...]  new page; with encodings, noVNC's SetEncodings
//                           is replaced by exactly that list
//   connect PASSWORD        fill the form, press Connect, wait for the
//                           outcome: {"status": "...", "error": bool}
//   pixels                  the canvas: {"w", "h", "rgba": base64}
//   click X Y               click the canvas at framebuffer (X, Y)
//   type TEXT               type into the canvas (\n is Enter)
//   quit
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
});
let page = null;
let context = null;

const say = (v) => process.stdout.write(JSON.stringify(v) + '\n');

async function open(url, encs) {
    if (context) {
        await context.close();
    }
    context = await browser.newContext();
    page = await context.newPage();
    page.on('pageerror', (e) => process.stderr.write('page error: ' + e + '\n'));
    if (encs) {
        // Test-only: make noVNC ask for exactly these encodings.
        await page.addInitScript((list) => { globalThis.__forcedEncodings = list; }, encs);
        await page.route('**/core/rfb.js', async (route) => {
            const resp = await route.fetch();
            const src = await resp.text();
            const marker = '_sendEncodings() {';
            if (!src.includes(marker)) {
                throw new Error('noVNC changed: no _sendEncodings');
            }
            const patched = src.replace(marker, marker +
                ' if (globalThis.__forcedEncodings) {' +
                ' RFB.messages.clientEncodings(this._sock, globalThis.__forcedEncodings);' +
                ' return; }');
            await route.fulfill({ response: resp, body: patched });
        });
    }
    const resp = await page.goto(url);
    return { status: resp.status() };
}

async function connect(password) {
    await page.fill('#password', password);
    await page.click('#connect');
    await page.waitForFunction(() => {
        const s = document.getElementById('status');
        return s.classList.contains('error') || s.textContent.startsWith('Connected');
    }, null, { timeout: 30000 });
    return page.evaluate(() => {
        const s = document.getElementById('status');
        return { status: s.textContent, error: s.classList.contains('error') };
    });
}

async function pixels() {
    return page.evaluate(() => {
        const c = document.querySelector('#screen canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let bin = '';
        for (let i = 0; i < d.length; i += 0x8000) {
            bin += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
        }
        return { w: c.width, h: c.height, rgba: btoa(bin) };
    });
}

async function click(x, y) {
    const box = await page.locator('#screen canvas').boundingBox();
    await page.mouse.click(box.x + x + 0.5, box.y + y + 0.5);
    return {};
}

async function type(text) {
    for (const part of text.split(/(\n)/)) {
        if (part === '\n') {
            await page.keyboard.press('Enter');
        } else if (part) {
            await page.keyboard.type(part);
        }
    }
    return {};
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
    const [cmd, ...rest] = line.split(' ');
    const arg = rest.join(' ');
    try {
        if (cmd === 'open') {
            say(await open(rest[0], rest[1] ? rest[1].split(',').map(Number) : null));
        } else if (cmd === 'connect') {
            say(await connect(arg));
        } else if (cmd === 'pixels') {
            say(await pixels());
        } else if (cmd === 'click') {
            say(await click(Number(rest[0]), Number(rest[1])));
        } else if (cmd === 'type') {
            say(await type(arg.replace(/\\n/g, '\n')));
        } else if (cmd === 'quit') {
            break;
        } else {
            say({ failure: 'unknown command ' + cmd });
        }
    } catch (e) {
        say({ failure: String(e) });
    }
}
rl.close();
await browser.close();
process.exit(0);
