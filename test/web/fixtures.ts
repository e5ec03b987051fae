// Browser-test helpers: Debian's Chromium driven by playwright-core, with a fake microphone
// that plays a WAV file.
import ESpeakNg from "espeak-ng";
import { writeFileSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Chromium with a fake microphone that loops `wavPath`, and nothing that reaches the internet. */
export async function launchChromium(wavPath: string, userDataDir: string): Promise<Browser> {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${wavPath}`,
    ],
  });
  // The persistent context stands in for a browser: closing it closes Chromium.
  return {
    newPage: () => context.newPage(),
    close: () => context.close(),
  } as unknown as Browser;
}

/**
 * Writes a mono 16-bit WAV: `text` spoken by eSpeak NG (the npm package, offline), then
 * `silenceSeconds` of silence. Chromium loops the file, so the user speaks, pauses, speaks again.
 */
export async function writeSpeechWav(path: string, text: string, silenceSeconds: number): Promise<number> {
  const espeak = await ESpeakNg({ arguments: ["-v", "en-us", "-s", "150", "-w", "speech.wav", text] });
  const wav = espeak.FS.readFile("speech.wav") as Uint8Array;
  const view = new DataView(wav.buffer, wav.byteOffset, wav.byteLength);
  const rate = view.getUint32(24, true);
  // eSpeak writes a 44-byte header then PCM16; its data size field may be a placeholder.
  const speech = new Int16Array(wav.slice(44, 44 + ((wav.length - 44) & ~1)).buffer);
  const total = speech.length + Math.round(silenceSeconds * rate);
  const out = Buffer.alloc(44 + total * 2);
  out.write("RIFF", 0);
  out.writeUInt32LE(36 + total * 2, 4);
  out.write("WAVEfmt ", 8);
  out.writeUInt32LE(16, 16);
  out.writeUInt16LE(1, 20);
  out.writeUInt16LE(1, 22);
  out.writeUInt32LE(rate, 24);
  out.writeUInt32LE(rate * 2, 28);
  out.writeUInt16LE(2, 32);
  out.writeUInt16LE(16, 34);
  out.write("data", 36);
  out.writeUInt32LE(total * 2, 40);
  for (let i = 0; i < speech.length; i++) out.writeInt16LE(speech[i]!, 44 + i * 2);
  writeFileSync(path, out);
  return speech.length / rate;
}
