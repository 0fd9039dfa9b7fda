#!/usr/bin/env bash
# kaizenctl against a kaizen-server with mutual TLS and bearer tokens: a CA,
# server and client certificates made here with openssl; `tokens add` writes
# the tokens file and SIGHUP loads it; --token / $KAIZEN_TOKEN, --tls_ca,
# --tls_cert, --tls_key reach the server; the wrong role, no token and no
# client certificate are refused with the right codes.
#
# Usage: kaizenctl_auth_test.sh SERVER_BIN KAIZENCTL_BIN
set -euo pipefail
SERVER_BIN=$(realpath "$1")
KAIZENCTL=$(realpath "$2")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kaizenctl-auth.XXXXXX")
SERVER_PID=""
PASSED=0
FAILED=0
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

check() {  # check NAME EXPECTED_EXIT EXPECTED_TEXT -- COMMAND...
  local name=$1 want_rc=$2 want_text=$3
  shift 4
  local out rc=0
  out=$(timeout 60 "$@" 2>&1) || rc=$?
  if [[ $rc -eq $want_rc && $out == *"$want_text"* ]]; then
    PASSED=$((PASSED + 1)); echo "ok   $name"
  else
    FAILED=$((FAILED + 1)); echo "FAIL $name: exit $rc (want $want_rc), output:"; echo "$out" | head -20
  fi
}

# Certificates: a CA, the server (localhost, 127.0.0.1), a client.
cd "$TMP"
KEY="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $KEY -days 2 -subj "/CN=test CA" -keyout ca.key -out ca.crt 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl req $KEY -subj "/CN=$who" -keyout $who.key -out $who.csr 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile $who.ext -out $who.crt 2>/dev/null
done

# Tokens: the first comes from `tokens add` before the server starts.
ADMIN=$("$KAIZENCTL" tokens add ops admin --tokens_file="$TMP/tokens" 2>/dev/null)
[[ $ADMIN == kzn_* ]] || { echo "tokens add printed no token"; exit 1; }
grep -q "^ops admin sha256:" "$TMP/tokens" || { echo "tokens file line missing"; exit 1; }
if grep -q "$ADMIN" "$TMP/tokens"; then echo "the token itself is in the tokens file"; exit 1; fi
check "tokens add refuses a duplicate name" 1 "ALREADY_EXISTS" -- \
  "$KAIZENCTL" tokens add ops reader --tokens_file="$TMP/tokens"
check "tokens add refuses an unknown role" 2 "unknown role" -- \
  "$KAIZENCTL" tokens add x superuser --tokens_file="$TMP/tokens"
# Through a symbolic link, keeping the file's mode.
mkdir "$TMP/secret" && ln -s "$TMP/tokens" "$TMP/secret/link" && chmod 600 "$TMP/tokens"
"$KAIZENCTL" tokens add linked reader --tokens_file="$TMP/secret/link" >/dev/null 2>&1
check "tokens add writes through a symlink and keeps the mode" 0 "600 linked" -- \
  bash -c "[[ -L '$TMP/secret/link' ]] && echo \$(stat -c %a '$TMP/tokens') \$(grep -o '^linked' '$TMP/tokens')"
# No token goes over plaintext to a server off loopback (nothing is sent).
check "token in clear text off loopback refused" 2 "clear text" -- \
  "$KAIZENCTL" --server=192.0.2.1:50051 --token=kzn_x datasets list

PORT=$((20000 + ($$ * 7) % 20000))
"$SERVER_BIN" --data_dir="$TMP/data" --grpc_port=$PORT --metrics_port=-1 --threads=1 \
  --tls_cert=server.crt --tls_key=server.key --tls_client_ca=ca.crt \
  --tokens_file="$TMP/tokens" --host=127.0.0.1 2> "$TMP/server.log" &
SERVER_PID=$!

TLS=(--server=localhost:$PORT --tls_ca=ca.crt --tls_cert=client.crt --tls_key=client.key)
for _ in $(seq 150); do
  if KAIZEN_TOKEN=$ADMIN "$KAIZENCTL" "${TLS[@]}" datasets list >/dev/null 2>&1; then break; fi
  sleep 0.2
done
check "admin token from \$KAIZEN_TOKEN over mTLS" 0 "" -- \
  env KAIZEN_TOKEN="$ADMIN" "$KAIZENCTL" "${TLS[@]}" datasets list
check "no token" 1 "UNAUTHENTICATED" -- env -u KAIZEN_TOKEN "$KAIZENCTL" "${TLS[@]}" models list
check "unknown token" 1 "UNAUTHENTICATED" -- "$KAIZENCTL" "${TLS[@]}" --token=kzn_nope jobs list
check "no client certificate" 1 "UNAVAILABLE" -- \
  "$KAIZENCTL" --server=localhost:$PORT --tls_ca=ca.crt --token="$ADMIN" datasets list
check "plaintext to a TLS port" 1 "UNAVAILABLE" -- \
  "$KAIZENCTL" --server=localhost:$PORT --token="$ADMIN" datasets list

# A reader added while the server runs, loaded by SIGHUP.
READER=$("$KAIZENCTL" tokens add dashboard reader --tokens_file="$TMP/tokens" 2>/dev/null)
check "reader unknown before SIGHUP" 1 "UNAUTHENTICATED" -- \
  "$KAIZENCTL" "${TLS[@]}" --token="$READER" jobs list
kill -HUP "$SERVER_PID"
for _ in $(seq 100); do
  if "$KAIZENCTL" "${TLS[@]}" --token="$READER" jobs list >/dev/null 2>&1; then break; fi
  sleep 0.1
done
check "reader after SIGHUP may list" 0 "" -- "$KAIZENCTL" "${TLS[@]}" --token="$READER" jobs list
check "reader may not delete" 1 "PERMISSION_DENIED: role \"reader\" (token \"dashboard\") may not call /kaizen.v1.DatasetService/DeleteDataset" -- \
  "$KAIZENCTL" "${TLS[@]}" --token="$READER" datasets delete anything
check "server log names tokens, never shows them" 0 "" -- \
  bash -c "grep -q '\"caller\":\"dashboard\"' '$TMP/server.log' && ! grep -q -e '$ADMIN' -e '$READER' '$TMP/server.log'"

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
