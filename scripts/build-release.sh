#!/usr/bin/env bash
# Build a released version of the dispatcher from its git tag, for the mixed-version tests
# (tests/upgrade.rs) and the chaos suite's restart-upgrade fault:
#
#   scripts/build-release.sh v0.1.0      # → target/releases/v0.1.0/dispatcher
#
# Cached: nothing is done when the binary is there. It builds in the same target directory
# as the main build, so only the dispatcher crate of that release is compiled (the
# dependencies are the same builds, pinned by Cargo.lock); the main build's own binary is
# linked again by the next `cargo build` or `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: scripts/build-release.sh <tag, e.g. v0.1.0>}
out="target/releases/$tag"
if [ -x "$out/dispatcher" ]; then
  exit 0
fi
# A clone without tags still has the commits: each release's commit is written here too.
case "$tag" in
  v0.1.0) commit=1ed5d0d0edface3eb6ccd720b25fe93e89c66400 ;;
  *) commit="" ;;
esac
if git rev-parse -q --verify "refs/tags/$tag^{commit}" >/dev/null; then
  rev="$tag"
elif [ -n "$commit" ] && git cat-file -e "$commit^{commit}" 2>/dev/null; then
  rev="$commit"
else
  echo "build-release: neither tag $tag nor its commit is in this clone (fetch the tags: git fetch --tags)" >&2
  exit 1
fi
src="target/releases/$tag-src"
rm -rf "$src"
mkdir -p "$src" "$out"
git archive "$rev" | tar -x -C "$src"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
echo "build-release: building $tag ($(git rev-parse --short "$rev^{commit}")) in $target_dir" >&2
cargo build --locked --quiet --manifest-path "$src/Cargo.toml" --target-dir "$target_dir" --bin dispatcher
cp "$target_dir/debug/dispatcher" "$out/dispatcher.tmp"
mv "$out/dispatcher.tmp" "$out/dispatcher"
rm -rf "$src"
"$out/dispatcher" --version >&2
