#!/usr/bin/env bash
# Regenerates the shipped prompts in sip-config/prompts: Festival with the HTS voice
# "cmu_us_slt_arctic_hts" (Debian: festival festvox-us-slt-hts), then sox to 8 kHz mono
# 16-bit PCM WAV at about -16 dBFS RMS with a little head and tail silence.
# Operators replace any of them per organization; see README.
# Usage: scripts/make-prompts.sh [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=sip-config/prompts
mkdir -p "$out"
declare -A text=(
  [enter_pin]="Please enter your security PIN, followed by the pound key."
  [incorrect_pin]="That PIN is not correct."
  [try_again]="Please try again."
  [no_input]="Sorry, I did not hear any input."
  [verified]="Thank you, verified."
  [transferring]="Transferring you now."
  [transfer_failed]="Sorry, the transfer failed. Goodbye."
  [locked_out]="For your security, PIN entry is temporarily locked. Please try again later."
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Announcements play while the PBX carries out the transfer: keep them short.
# Arguments: the prompts to make (default: all).
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${!text[@]}")
for name in "${names[@]}"; do
  echo "${text[$name]}" > "$tmp/$name.txt"
  text2wave -eval "(voice_cmu_us_slt_arctic_hts)" -o "$tmp/$name.raw.wav" "$tmp/$name.txt"
  # 8 kHz mono, telephone band, 150 ms of silence around the speech.
  sox "$tmp/$name.raw.wav" -r 8000 -c 1 -b 16 "$tmp/$name.8k.wav" \
    highpass 200 lowpass 3400 pad 0.15 0.15
  # Gain to about -16 dBFS RMS, with a limiter so peaks never clip (two passes: the
  # limiter takes back a little of the first).
  src="$tmp/$name.8k.wav"
  for pass in 1 2; do
    rms=$(sox "$src" -n stats 2>&1 | awk '/RMS lev dB/ {print $4}')
    gain=$(awk -v r="$rms" 'BEGIN {printf "%.2f", -16 - r}')
    sox "$src" "$tmp/$name.p$pass.wav" gain -l "$gain"
    src="$tmp/$name.p$pass.wav"
  done
  cp "$src" "$out/$name.wav"
  rms=$(sox "$out/$name.wav" -n stats 2>&1 | awk '/RMS lev dB/ {print $4}')
  printf '%-16s %5.2f s  rms %s dBFS\n' "$name" "$(sox --i -D "$out/$name.wav")" "$rms"
done
