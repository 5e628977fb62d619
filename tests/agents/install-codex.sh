#!/bin/sh
# Install the pinned Codex CLI into DIR (npm, no global install) unless it is
# already there, then print the path of the runnable `codex`.
#   usage: tests/agents/install-codex.sh DIR
# The per-platform package (an npm alias of @openai/codex@VERSION-linux-<arch>)
# ships a native musl binary, which runs directly; when there is none for this
# machine, the package's node launcher (bin/codex.js) is printed instead.
set -eu
VERSION=0.171.0
DIR=${1:?usage: $0 DIR}
case "$(uname -m)" in
    x86_64 | amd64) PLATFORM=linux-x64 TRIPLE=x86_64-unknown-linux-musl ;;
    aarch64 | arm64) PLATFORM=linux-arm64 TRIPLE=aarch64-unknown-linux-musl ;;
    *) PLATFORM= TRIPLE= ;;
esac
NATIVE="$DIR/node_modules/@openai/codex-$PLATFORM/vendor/$TRIPLE/bin/codex"
LAUNCHER="$DIR/node_modules/@openai/codex/bin/codex.js"

bin() {
    if [ -n "$PLATFORM" ] && [ -x "$NATIVE" ]; then echo "$NATIVE"; else echo "$LAUNCHER"; fi
}
have() {
    b=$(bin)
    [ -e "$b" ] && "$b" --version 2>/dev/null | grep -q "^codex-cli $VERSION\$"
}

if ! have; then
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
        "@openai/codex@$VERSION" >&2
    have || { echo "install-codex: $(bin) does not report version $VERSION" >&2; exit 1; }
fi
bin
