// Test harness: a real Latchkey (the already-built binary) on a free port with a fresh SQLite
// file, and an SMTP sink on 127.0.0.1:0 that keeps every mail so tests can read the codes.
//
// LATCHKEY_BIN names the binary (default ../../target/debug/latchkey, relative to this
// package). Rate limits are off, as in the Rust end-to-end tests.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';

const here = dirname(fileURLToPath(import.meta.url));

/** The Cognito settings every test configures its clients with. */
export const REGION = 'local-1';
export const USER_POOL_ID = `${REGION}_latchkey`;
export const CLIENT_ID = 'local';
export const IDENTITY_POOL_ID = `${REGION}:00000000-0000-4000-8000-000000000000`;

/** An SMTP sink: every message is parsed and kept; `nextMail(to)` waits for one. */
export async function startSink() {
  const inbox = [];
  const waiters = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      simpleParser(stream)
        .then((mail) => {
          const to = session.envelope.rcptTo.map((r) => r.address.toLowerCase());
          inbox.push({ to, subject: mail.subject ?? '', text: mail.text ?? '' });
          for (const wake of waiters.splice(0)) wake();
          callback();
        })
        .catch(callback);
    },
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', ok);
  });
  const port = server.server.address().port;

  /** The oldest unread mail to `to` (waits up to 10 s). */
  async function nextMail(to) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const i = inbox.findIndex((m) => m.to.includes(to.toLowerCase()));
      if (i >= 0) return inbox.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no mail to ${to} within 10 s`);
      await new Promise((wake) => {
        const timer = setTimeout(wake, left);
        waiters.push(() => {
          clearTimeout(timer);
          wake();
        });
      });
    }
  }

  /** The six-digit code of the next mail to `to`. */
  async function nextCode(to) {
    const mail = await nextMail(to);
    const runs = mail.text.match(/\b\d{6}\b/g) ?? [];
    if (runs.length !== 1) throw new Error(`expected one six-digit code in ${JSON.stringify(mail.text)}`);
    return runs[0];
  }

  return { port, nextMail, nextCode, close: () => new Promise((ok) => server.close(ok)) };
}

/** Starts Latchkey with the sink as its relay; resolves once `/readyz` answers 200. */
export async function startLatchkey(sink, env = {}) {
  const bin = process.env.LATCHKEY_BIN ?? resolve(here, '../../../target/debug/latchkey');
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-cognito-'));
  const child = spawn(bin, ['serve'], {
    env: {
      PATH: process.env.PATH,
      LATCHKEY_LISTEN: '127.0.0.1:0',
      LATCHKEY_DATABASE_URL: `sqlite://${join(dir, 'latchkey.db')}`,
      LATCHKEY_SMTP_URL: `smtp://127.0.0.1:${sink.port}`,
      LATCHKEY_SECRET: 'node-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz',
      LATCHKEY_RATE_LIMIT: 'off',
      LATCHKEY_REGION: REGION,
      LATCHKEY_CLIENT_IDS: CLIENT_ID,
      LATCHKEY_LOG: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const base = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`latchkey did not start within 30 s:\n${output}`)), 30_000);
    const watch = (chunk) => {
      output += chunk.toString();
      const found = output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (found) {
        clearTimeout(timer);
        ok(found[1]);
      }
    };
    child.stdout.on('data', watch);
    child.stderr.on('data', watch);
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`latchkey exited with ${code} (is it built? LATCHKEY_BIN=${bin}):\n${output}`));
    });
  });
  for (let i = 0; ; i++) {
    const ready = await fetch(`${base}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (i >= 100) throw new Error('latchkey never became ready');
    await new Promise((wake) => setTimeout(wake, 100));
  }
  async function stop() {
    if (child.exitCode === null) {
      const exited = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return { base, stop, output: () => output };
}

/** A raw call of the Cognito JSON protocol: `{status, type, body}`. */
export async function cognito(base, target, body) {
  const response = await fetch(`${base}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': target },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  return { status: response.status, type: json.__type, body: json };
}

/** A fresh address for one test. */
export function freshEmail(tag) {
  return `${tag}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
}

/** Decodes a JWT's claims without verifying them. */
export function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}
