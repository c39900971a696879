#!/usr/bin/env bash
# The talk-off speech sets: synthesized speech in several languages, voices, pitches and speeds
# (espeak-ng), brought to 8 kHz mono µ-law WAV by sox. The in-band DTMF detector must find no
# digit in any of it, and the under-speech evaluation presses PINs over it.
#
#   scripts/make-talkoff.sh           the small committed set in tests/data/talkoff (~3 min)
#   scripts/make-talkoff.sh --long    the long set (~1.6 h, ~46 MB, not committed) in
#                                     tests/data/talkoff-long, which the ignored evaluation
#                                     reads: cargo test --release --lib dtmf -- --ignored
#   scripts/make-talkoff.sh --heldout two held-out sets (~1.3 h, not committed) in
#                                     tests/data/talkoff-heldout/{1,2}: voices of 16 other
#                                     languages each, never used to choose the detector's
#                                     rules; PCR_SCAN=tests/data/talkoff-heldout/1 cargo test
#                                     --release --lib dtmf::inband::under_speech::diagnose::
#                                     talk_off_scan -- --ignored --nocapture
#
# Deterministic for a given espeak-ng and sox (no dither: sox -D). Needs:
# apt-get install -y espeak-ng sox
set -euo pipefail
cd "$(dirname "$0")/.."

# One voice, pitch and speed: text -> 8 kHz µ-law WAV at -6 dB peak.
render() { # out voice pitch speed text
  local tmp
  tmp=$(mktemp --suffix=.wav)
  espeak-ng -v "$2" -p "$3" -s "$4" -w "$tmp" "$5"
  sox -D "$tmp" -r 8000 -c 1 -e u-law -b 8 "$1" norm -6
  rm -f "$tmp"
}

summary() {
  find "$1" -name '*.wav' -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d files, %d bytes, %.2f h at 8000 B/s\n", n, s, s/8000/3600}'
}

if [ "${1:-}" = "--heldout" ]; then
  texts=("Thank you for calling customer service, all of our agents are currently busy. Please enter your personal identification number followed by the pound key. Your call is important to us and will be answered in the order it was received."
  "Vielen Dank für Ihren Anruf, bitte haben Sie einen Moment Geduld. Unsere Geschäftszeiten sind Montag bis Freitag von acht bis achtzehn Uhr. Auf Wiederhören und noch einen schönen Tag."
  "Merci de votre appel, tous nos conseillers sont actuellement occupés. Nos bureaux sont ouverts du lundi au vendredi de neuf heures à dix-sept heures. Au revoir et bonne journée."
  "Gracias por llamar, en este momento todos nuestros agentes están ocupados. Ayer fuimos a la playa con los niños y comimos paella en un restaurante del puerto.")
  # Set 1: extreme pitches (0-39 and 92-99); set 2: pitches spread over 0-99.
  for set in 1 2; do
    out=tests/data/talkoff-heldout/$set
    rm -rf "$out"
    mkdir -p "$out"
    if [ $set = 1 ]; then
      langs="ru hi tr cs fi hu id vi el ro uk ja cmn ko ar he"
      variants="m1 f2 m6 f4 m2 f3 m7 f5 m3 f1 m4 f4"
    else
      langs="bg hr sk sl lt lv et da nb is ca eu af sw ms ta"
      variants="m2 f1 m5 f5 m7 f3"
    fi
    i=0
    for lang in $langs; do
      for v in $variants; do
        if [ $set = 1 ]; then
          pitch=$(( i % 2 == 0 ? 92 + (i % 8) : (i * 7) % 40 ))
        else
          pitch=$(( (i * 53 + 17) % 100 ))
        fi
        speed=$(( 120 + (i * 13) % 80 ))
        render "$out/$lang+$v-p$pitch-s$speed.wav" "$lang+$v" "$pitch" "$speed" "${texts[$(( i % 4 ))]}"
        i=$((i + 1))
      done
    done
    summary "$out"
  done
  exit 0
fi

if [ "${1:-}" != "--long" ]; then
  out=tests/data/talkoff
  mkdir -p "$out"
  text="Thank you for calling. Please hold while we connect your call. \
Your account number is one two three four five six seven eight nine zero. \
We are open Monday to Friday, from nine in the morning until five in the evening. \
Press star or pound, or say operator at any time. Goodbye, and have a wonderful day."
  i=0
  for voice in en-us en-gb en+f3 en+m7 en+f5 de fr es it; do
    # Alternate low and high pitch across voices to cover both without doubling the set.
    pitch=$(( i % 2 == 0 ? 25 : 75 ))
    i=$((i+1))
    render "$out/speech-$voice-p$pitch.wav" "$voice" "$pitch" $((140 + 10 * (i % 4))) "$text"
  done
  summary "$out"
  exit 0
fi

# The long set: ten languages, each read by twelve voice variants (seven male, five female) at
# pitches from 10 to 90 and speeds from 130 to 190 words a minute; each reading starts at a
# different sentence so no two are the same text in the same order.
out=tests/data/talkoff-long
rm -rf "$out"
mkdir -p "$out"
declare -A texts
texts[en-us]="Thank you for calling customer service, all of our agents are currently busy.|Please enter your personal identification number followed by the pound key.|Your call is important to us and will be answered in the order it was received.|For billing questions, press one; for technical support, press two.|The weather tomorrow will be cloudy in the morning with sunshine in the afternoon.|I was just telling her that we should meet at the station around half past eight.|Could you repeat that number slowly, seven, three, zero, nine, four, two?|Music plays while you wait, and a representative will be with you shortly.|Our offices are closed on public holidays and on the first Monday of every month.|She sells sea shells by the sea shore, and the shells she sells are surely sea shells."
texts[en-gb]="Good afternoon, you have reached the reception desk of the north London clinic.|If you know the extension of the person you wish to speak to, please dial it now.|The train now arriving at platform four is the delayed service to Edinburgh Waverley.|We apologise for any inconvenience this may cause to your journey this evening.|Honestly, I thought the meeting had been moved to Thursday, but nobody told me.|Please have your account number and postcode ready before speaking to an advisor.|Your balance is three hundred and twenty pounds and fifteen pence.|To hear these options again, press the star key, or simply stay on the line.|The quick brown fox jumps over the lazy dog near the riverbank at dawn.|Thank you for your patience; your call will be transferred in a moment."
texts[de]="Vielen Dank für Ihren Anruf, bitte haben Sie einen Moment Geduld.|Bitte geben Sie jetzt Ihre persönliche Geheimzahl ein und bestätigen Sie mit der Rautetaste.|Unsere Geschäftszeiten sind Montag bis Freitag von acht bis achtzehn Uhr.|Der nächste freie Mitarbeiter ist gleich für Sie da.|Ich habe gestern mit meiner Schwester telefoniert, und sie kommt am Wochenende zu Besuch.|Für Fragen zu Ihrer Rechnung drücken Sie die Eins, für technische Hilfe die Zwei.|Die Wettervorhersage für morgen verspricht Regen im Norden und Sonne im Süden.|Ihre Kundennummer lautet vier, sieben, null, drei, acht, neun.|Wir verbinden Sie jetzt mit der gewünschten Abteilung.|Auf Wiederhören und noch einen schönen Tag."
texts[fr]="Merci de votre appel, tous nos conseillers sont actuellement occupés.|Veuillez saisir votre code personnel suivi de la touche dièse.|Nos bureaux sont ouverts du lundi au vendredi de neuf heures à dix-sept heures.|Votre appel est important pour nous, merci de rester en ligne.|Hier soir, nous sommes allés au cinéma avec des amis, et le film était formidable.|Pour toute question sur votre facture, tapez un; pour l'assistance technique, tapez deux.|Le train à destination de Lyon partira avec un retard d'environ quinze minutes.|Votre numéro de dossier est le six, deux, huit, zéro, cinq, un.|Nous vous mettons en relation avec le service demandé.|Au revoir et bonne journée."
texts[es]="Gracias por llamar, en este momento todos nuestros agentes están ocupados.|Por favor, introduzca su número secreto seguido de la tecla almohadilla.|Nuestro horario de atención es de lunes a viernes, de nueve a seis.|Su llamada es muy importante para nosotros, no cuelgue por favor.|Ayer fuimos a la playa con los niños y comimos paella en un restaurante del puerto.|Para consultas sobre su factura, pulse uno; para soporte técnico, pulse dos.|Mañana se esperan lluvias en el norte y temperaturas altas en el sur.|Su número de cliente es el cuatro, nueve, uno, siete, tres, cero.|Le pasamos con el departamento correspondiente.|Muchas gracias y que tenga un buen día."
texts[it]="Grazie per aver chiamato, tutti i nostri operatori sono momentaneamente occupati.|Per favore, digiti il suo codice personale seguito dal tasto cancelletto.|I nostri uffici sono aperti dal lunedì al venerdì, dalle nove alle diciotto.|La sua chiamata è importante per noi, resti in linea per non perdere la priorità.|Domenica scorsa siamo andati in montagna e abbiamo mangiato in un piccolo rifugio.|Per informazioni sulla bolletta prema uno, per l'assistenza tecnica prema due.|Il treno regionale per Firenze partirà dal binario tre con venti minuti di ritardo.|Il suo numero cliente è cinque, otto, due, sei, zero, quattro.|La stiamo trasferendo all'ufficio richiesto.|Arrivederci e buona giornata."
texts[nl]="Bedankt voor uw telefoontje, al onze medewerkers zijn momenteel in gesprek.|Toets alstublieft uw persoonlijke code in, gevolgd door het hekje.|Wij zijn bereikbaar van maandag tot en met vrijdag, van negen tot vijf uur.|Uw gesprek is belangrijk voor ons, blijf aan de lijn.|Gisteren fietsten we langs de grachten en dronken we koffie op een terras.|Voor vragen over uw rekening kiest u één, voor technische hulp kiest u twee.|Morgen wordt het wisselvallig met af en toe regen en een stevige wind.|Uw klantnummer is drie, zes, nul, acht, twee, zeven.|U wordt nu doorverbonden met de juiste afdeling.|Tot ziens en nog een fijne dag."
texts[pt]="Obrigado por ligar, todos os nossos atendentes estão ocupados neste momento.|Por favor, digite a sua senha pessoal seguida da tecla cardinal.|O nosso horário de atendimento é de segunda a sexta, das nove às dezoito horas.|A sua chamada é muito importante para nós, por favor aguarde.|No fim de semana passado fomos à praia e comemos peixe grelhado junto ao mar.|Para questões sobre a sua fatura, prima um; para apoio técnico, prima dois.|Amanhã o tempo estará nublado de manhã, com sol durante a tarde.|O seu número de cliente é sete, um, quatro, nove, zero, cinco.|Vamos transferir a sua chamada para o departamento pretendido.|Muito obrigado e tenha um bom dia."
texts[pl]="Dziękujemy za telefon, wszyscy nasi konsultanci są obecnie zajęci.|Proszę wprowadzić swój osobisty kod, a następnie nacisnąć krzyżyk.|Biuro jest czynne od poniedziałku do piątku w godzinach od ósmej do szesnastej.|Państwa połączenie jest dla nas ważne, prosimy pozostać na linii.|Wczoraj byliśmy na spacerze w parku i widzieliśmy wiewiórki na drzewach.|W sprawie rachunku proszę wybrać jeden, w sprawie pomocy technicznej dwa.|Jutro spodziewane są opady deszczu i silny wiatr na wybrzeżu.|Państwa numer klienta to osiem, trzy, sześć, jeden, dziewięć, dwa.|Za chwilę połączymy z odpowiednim działem.|Dziękujemy i życzymy miłego dnia."
texts[sv]="Tack för att du ringer, alla våra handläggare är upptagna just nu.|Var vänlig och slå in din personliga kod följd av fyrkant.|Vi har öppet måndag till fredag mellan klockan åtta och sjutton.|Ditt samtal är viktigt för oss, var god dröj.|I helgen åkte vi till skärgården och badade i det kalla havet.|För frågor om din faktura, tryck ett; för teknisk support, tryck två.|I morgon blir det molnigt med regnskurar på eftermiddagen.|Ditt kundnummer är två, fem, noll, sju, fyra, åtta.|Vi kopplar nu ditt samtal till rätt avdelning.|Tack och ha en trevlig dag."
variants=(m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 f5)
lang_i=0
for lang in en-us en-gb de fr es it nl pt pl sv; do
  IFS='|' read -r -a sentences <<< "${texts[$lang]}"
  n=${#sentences[@]}
  for v_i in "${!variants[@]}"; do
    v=${variants[$v_i]}
    k=$(( lang_i * 12 + v_i ))
    pitch=$(( 10 + (k * 37) % 81 ))
    speed=$(( 130 + (k * 23) % 61 ))
    text=""
    for ((j = 0; j < n; j++)); do
      text+="${sentences[$(( (j + v_i) % n ))]} "
    done
    render "$out/$lang+$v-p$pitch-s$speed.wav" "$lang+$v" "$pitch" "$speed" "$text"
  done
  lang_i=$((lang_i + 1))
done
summary "$out"
