#!/usr/bin/env bash
# bootstrap.sh: from a fresh Debian 12 machine to a built (and tested, or
# running) mlopsd.
#
#   ./bootstrap.sh deps     install the Debian packages the build and tests need
#   ./bootstrap.sh build    deps, then autoreconf, configure in ./build, make
#   ./bootstrap.sh check    build, then `make check` (exit status of the tests)
#   ./bootstrap.sh demo     build, then run `mlopsd dev` (extra args passed on)
#
# Extra configure arguments come from $CONFIGURE_FLAGS (e.g.
# CONFIGURE_FLAGS=--enable-sanitizers).  The apt step is skipped when every
# package is already installed, so repeated runs are fast.
set -euo pipefail

PACKAGES="build-essential autoconf automake libtool pkg-config
	librdkafka-dev libavro-dev libsqlite3-dev libpq-dev libevent-dev
	libyaml-dev libjansson-dev libxgboost-dev libcmocka-dev libjemalloc-dev
	postgresql kcat prometheus
	python3 python3-confluent-kafka python3-avro python3-psycopg2 python3-scipy
	wrk nginx-light curl git ca-certificates"

top=$(cd "$(dirname "$0")" && pwd)
builddir="$top/build"

say() { printf '==> %s\n' "$*"; }
die() { printf 'bootstrap.sh: %s\n' "$*" >&2; exit 1; }

usage() {
	echo "usage: ./bootstrap.sh deps|build|check|demo [mlopsd dev args...]"
	echo "  deps   install the Debian packages (apt-get; sudo when not root)"
	echo "  build  deps, autoreconf -fi, configure in ./build, make"
	echo "  check  build, then make check; exits with the tests' status"
	echo "  demo   build, then exec ./build/mlopsd dev"
	echo "CONFIGURE_FLAGS adds configure arguments (e.g. --enable-sanitizers)."
}

deps() {
	local missing p
	if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
		say "not a Debian system: skipping packages; you need the equivalents of:"
		echo "$PACKAGES" | tr -s ' \t\n' ' ' | fold -s -w 76 | sed 's/^/    /'
		return 0
	fi
	missing=
	for p in $PACKAGES; do
		dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' ||
			missing="$missing $p"
	done
	if [ -z "$missing" ]; then
		say "all Debian packages already installed"
		return 0
	fi
	local sudo=
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null ||
			die "missing packages:$missing; run as root or install sudo"
		sudo="sudo"
	fi
	say "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -q || die "apt-get update failed"
	# shellcheck disable=SC2086
	$sudo apt-get install -y -q --no-install-recommends $missing ||
		die "apt-get install failed"
}

build() {
	cd "$top"
	[ -f configure.ac ] || die "run me from an mlopsd source tree"
	if [ -f config.status ]; then
		die "the source tree is configured in place ($top/config.status);" \
		    "run 'make distclean' there first: builds go in ./build"
	fi
	# The TAP driver is ours to ship (autoreconf does not install it).
	if [ ! -f build-aux/tap-driver.sh ]; then
		mkdir -p build-aux
		cp "$(automake --print-libdir)/tap-driver.sh" build-aux/
	fi
	say "autoreconf -fi"
	autoreconf -fi
	say "configure (in ./build) ${CONFIGURE_FLAGS:-}"
	mkdir -p "$builddir"
	cd "$builddir"
	# shellcheck disable=SC2086
	../configure -q ${CONFIGURE_FLAGS:-}
	say "make -j$(nproc)"
	make -j"$(nproc)"
	say "built $builddir/mlopsd"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case "$cmd" in
deps)
	deps
	;;
build)
	deps
	build
	;;
check)
	deps
	build
	say "make check"
	status=0
	make -C "$builddir" -j"$(nproc)" check VERBOSE=1 || status=$?
	if [ "$status" -eq 0 ]; then
		say "all tests passed"
	else
		say "tests failed (see $builddir/test-suite.log)"
	fi
	exit "$status"
	;;
demo)
	deps
	build
	say "exec ./build/mlopsd dev $*"
	exec "$builddir/mlopsd" dev "$@"
	;;
-h|--help)
	usage
	;;
*)
	usage >&2
	exit 2
	;;
esac
