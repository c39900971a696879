#!/usr/bin/env bash
# Regenerates the talk-off speech set in tests/data/talkoff: synthesized speech in several
# voices, pitches and speeds (espeak-ng), brought to 8 kHz mono µ-law WAV by sox.
# The in-band DTMF detector must find no digit in any of it.
# Needs: apt-get install -y espeak-ng sox
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/data/talkoff
mkdir -p "$out"
text="Thank you for calling. Please hold while we connect your call. \
Your account number is one two three four five six seven eight nine zero. \
We are open Monday to Friday, from nine in the morning until five in the evening. \
Press star or pound, or say operator at any time. Goodbye, and have a wonderful day."
i=0
for voice in en-us en-gb en+f3 en+m7 en+f5 de fr es it; do
  # Alternate low and high pitch across voices to cover both without doubling the set.
  for pitch in $(( i % 2 == 0 ? 25 : 75 )); do
    i=$((i+1))
    tmp=$(mktemp --suffix=.wav)
    espeak-ng -v "$voice" -p "$pitch" -s $((140 + 10 * (i % 4))) -w "$tmp" "$text"
    sox "$tmp" -r 8000 -c 1 -e u-law -b 8 "$out/speech-$voice-p$pitch.wav" norm -6
    rm -f "$tmp"
  done
done
ls -la "$out" | tail -n +2 | awk '{s+=$5} END {print NR-1 " files, " s " bytes"}'
