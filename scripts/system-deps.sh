#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing (as root), or says what
# to install. Java and Google's Firestore emulator come with the Google Cloud CLI and are
# checked, not installed: they are large and the CLI has its own installer.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# ImageMagick's identify checks the output quality independently of our own estimate (tests).
# Look for the real one: some machines carry stand-ins for ImageMagick's commands.
identify -version 2>/dev/null | grep -q ImageMagick || missing+=(imagemagick)
# The DCT-domain JPEG codec (native/) is compiled against libjpeg-turbo.
[[ -f /usr/include/jpeglib.h ]] || missing+=(libjpeg62-turbo-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# The browser tests drive Debian's Chromium through its own chromedriver (Selenium).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# make fuzz (and its short run in make test): clang's libFuzzer and sanitizer runtimes, and
# jpegtran to make the seed JPEGs Pillow cannot write (arithmetic-coded, odd scan scripts).
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v jpegtran >/dev/null 2>&1 || missing+=(libjpeg-turbo-progs)

install_missing() {
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  missing=()
}
install_missing

# libFuzzer and the sanitizer runtimes ship apart from clang (libclang-rt-<major>-dev on
# Debian 12 and later): link a trivial fuzz target to find out whether they are there.
fuzzer_check=$(mktemp -d)
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$fuzzer_check/t.c"
clang -fsanitize=fuzzer,address,undefined "$fuzzer_check/t.c" -o "$fuzzer_check/t" 2>/dev/null ||
  missing+=("libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev")
rm -rf "$fuzzer_check"
install_missing

# npm ci installs firebase-tools (the Firebase emulators, Node 20+) and Swagger UI (/docs).
command -v npm >/dev/null 2>&1 || { echo "Node.js 20+ with npm is required (firebase-tools, Swagger UI): https://nodejs.org" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "Java 17+ is required by the Firestore emulator (Debian: openjdk-17-jre-headless)" >&2; exit 1; }
command -v gcloud >/dev/null 2>&1 || { echo "The Google Cloud CLI is required for its Firestore emulator: https://cloud.google.com/sdk/docs/install" >&2; exit 1; }
exit 0
