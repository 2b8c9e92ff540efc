#!/usr/bin/env bash
# Make sure an MQTT broker listens on 127.0.0.1:1883 for `make run`.
# Uses whatever already listens there; otherwise starts Mosquitto in the background with
# configs/mosquitto/edged-dev.conf (loopback only, TCP_NODELAY, persistence under
# .run/mosquitto/). `make stop-broker` stops the one started here.
set -euo pipefail
cd "$(dirname "$0")/.."

port=1883
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if listening; then
  echo "edged: using the MQTT broker already listening on 127.0.0.1:$port"
  exit 0
fi
scripts/bootstrap.sh mosquitto
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)

run=$PWD/.run/mosquitto
mkdir -p "$run"
sed -e "s#^persistence_location .*#persistence_location $run/#" \
    configs/mosquitto/edged-dev.conf > "$run/mosquitto.conf"
{
  echo "pid_file $run/mosquitto.pid"
  # As root Mosquitto switches to the 'mosquitto' user; that user must own its state.
  if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown -R mosquitto "$run"
  fi
} >> "$run/mosquitto.conf"
"$mosq" -c "$run/mosquitto.conf" -d
for _ in $(seq 50); do
  listening && { echo "edged: started Mosquitto on 127.0.0.1:$port (state in $run)"; exit 0; }
  sleep 0.1
done
echo "edged: Mosquitto did not start; see its log with: $mosq -c $run/mosquitto.conf -v" >&2
exit 1
