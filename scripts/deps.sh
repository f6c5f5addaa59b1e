# deps.sh — sourced by scripts/setup and scripts/test-all: the Debian packages
# barista builds and tests with, installed only when missing.
BARISTA_APT_PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev \
libuv1-dev libhttp-parser-dev libcjson-dev libxxhash-dev libpcre2-dev \
libutf8proc-dev libhiredis-dev libcurl4-openssl-dev libcmocka-dev libyaml-dev libssl-dev \
redis-server curl python3-venv clang-format \
prometheus chromium chromium-driver"

barista_install_deps() {
    local missing=""
    for p in $BARISTA_APT_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
}
