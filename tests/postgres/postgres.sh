#!/usr/bin/env bash
# A private PostgreSQL server for the tests: Debian's postgresql-15 binaries,
# a throw-away cluster under /tmp, reachable only through a Unix socket in its
# own folder (nothing listens on TCP), trust authentication for the role
# "kaizen", fsync off (the data is discarded).
#
#   postgres.sh start INFO_FILE   starts a cluster and writes its socket folder
#                                 to INFO_FILE (the tests read it through
#                                 KAIZEN_TEST_POSTGRES_INFO)
#   postgres.sh stop INFO_FILE    stops that cluster and removes it
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# "postgres" user that Debian's package creates.
set -euo pipefail

cmd=${1:?usage: postgres.sh start|stop INFO_FILE}
info=${2:?usage: postgres.sh start|stop INFO_FILE}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$bindir" ]]; then
  echo "postgres.sh: PostgreSQL's server binaries are missing (apt-get install postgresql)" >&2
  exit 1
fi

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Closes every descriptor above stderr (except bash's own script descriptor),
# so that the server, which outlives this script, holds none of its caller's
# pipes: a caller reading this script's output until EOF would wait forever.
close_inherited_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if ((fd > 2 && fd != 255)); then eval "exec ${fd}>&-"; fi
  done
}

case "$cmd" in
  start)
    if [[ -f "$info" ]]; then "$0" stop "$info" || true; fi
    dir=$(mktemp -d /tmp/kaizen-pg-XXXXXX)
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$dir"; fi
    as_owner "$bindir/initdb" -D "$dir/data" -U kaizen -A trust --no-sync -E UTF8 \
      --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    (
      close_inherited_fds
      as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
    ) || { cat "$dir/server.log" >&2; exit 1; }
    mkdir -p "$(dirname "$info")"
    echo "$dir" >"$info"
    echo "postgres.sh: PostgreSQL ($("$bindir/postgres" --version)) on socket folder $dir"
    ;;
  stop)
    [[ -f "$info" ]] || exit 0
    dir=$(cat "$info")
    if [[ -d "$dir/data" ]]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ "$dir" == /tmp/kaizen-pg-* ]]; then rm -rf "$dir"; fi
    rm -f "$info"
    ;;
  *)
    echo "usage: postgres.sh start|stop INFO_FILE" >&2
    exit 2
    ;;
esac
