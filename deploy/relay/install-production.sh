#!/bin/sh
# The relay's production dependencies, exactly as the image installs them (deploy/relay/Dockerfile)
# and as test/deploy/relay-image.test.ts runs it: run from a directory holding package.json,
# package-lock.json, .npmrc and patches/. Needs Node 24 with npm, python3, make and a C++ compiler.
set -eu
# Runtime packages only, at the lockfile's versions. Scripts are off: the one native addon that
# matters (Opus) is built below, after it is patched; onnxruntime-node ships its binaries.
# (`npm ci` would refuse this lockfile: it lacks workerd's other-platform optional packages.)
npm install --omit=dev --ignore-scripts --no-save --no-audit --no-fund --prefer-offline
# The fixes in patches/ (see patches/README.md), then the patched C++ Opus binding from source.
npx --yes --prefer-offline patch-package@8.0.1
npm rebuild @discordjs/opus --build-from-source
