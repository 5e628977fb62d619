#!/bin/sh
# Install the pinned Claude Code CLI into DIR (npm, no global install) unless
# it is already there, then print the path of the native binary.
#   usage: tests/agents/install-claude.sh DIR
# npm's postinstall scripts are not needed: the per-platform package ships the
# native binary, which runs directly.
set -eu
VERSION=2.1.328
DIR=${1:?usage: $0 DIR}
BIN="$DIR/node_modules/@anthropic-ai/claude-code-linux-x64/claude"

have() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "^$VERSION "; }

if ! have; then
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$VERSION" >&2
    have || { echo "install-claude: $BIN does not report version $VERSION" >&2; exit 1; }
fi
echo "$BIN"
