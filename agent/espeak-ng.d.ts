// The `espeak-ng` package ships an Emscripten ES module without types.
declare module "espeak-ng" {
  interface ESpeakNgModule {
    FS: { readFile(path: string, options?: { encoding?: "binary" | "utf8" }): Uint8Array | string };
  }
  export default function ESpeakNg(options: { arguments: string[] }): Promise<ESpeakNgModule>;
}
