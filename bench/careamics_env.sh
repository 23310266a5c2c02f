#!/usr/bin/env bash
# CAREamics' own environment for bench/careamics_baseline.py (issue 28's baseline), kept apart from the
# project's .venv so neither constrains the other:
#
#     bash bench/careamics_env.sh [/work/careamics-venv]
#
# careamics 0.3.5 (the newest release, 2026-10) asks for torch<2.14 and torchvision<=0.26; torchvision 0.26
# pins torch==2.11, so no careamics release installs beside the project's CPU torch 2.13.0 by the resolver.
# Instead: every dependency at the version pip chose within careamics' own ranges, torchvision 0.28.0 (the
# release built for torch 2.13) and careamics itself without dependency resolution. `pip check` then reports
# exactly that torchvision pin, and nothing else. CAREamics' N2V uses no torchvision op (it imports it for a
# version string and its LVAE transforms); bench/careamics_baseline.py declares the two ops the CUDA-built
# torchvision wheel cannot load beside a CPU torch, so that the import succeeds.
#
# torch==2.13.0 resolves to the CPU wheel in this machine's local wheel folder (pip's find-links); on a machine
# without it, install torch 2.13.0's CPU build first, or pip fetches the CUDA build (several GB).
set -euo pipefail

VENV="${1:-/work/careamics-venv}"
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade "pip==26.3"

REQ="$(mktemp)"
trap 'rm -f "$REQ"' EXIT
cat > "$REQ" <<'PINS'
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
bioimageio.core==0.11.0
bioimageio.spec==0.5.12.0
certifi==2026.10.19.post1
contourpy==1.3.3
cycler==0.12.1
distro==1.9.0
dnspython==2.9.2
donfig==0.8.1.post1
email-validator==2.4.0
exceptiongroup==1.3.2
filelock==4.3.2
fonttools==4.69.1
frozenlist==1.8.0
fsspec==2026.9.0
genericache==0.5.2
google-crc32c==1.9.0
h11==0.16.0
httpcore==1.0.9
httpx==0.29.0
idna==3.21
imagecodecs==2026.3.6
ImageIO==2.38.2
Jinja2==3.1.6
kiwisolver==1.5.1
lazy-loader==0.6
lightning==2.6.6
lightning-utilities==0.15.3
loguru==0.7.3
Markdown==3.11.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
matplotlib==3.11.2
mdurl==0.1.2
microssim==0.0.5
mpmath==1.3.0
multidict==7.2.1
networkx==3.6.1
numcodecs==0.16.6
numpy==2.4.6
packaging==26.4
pandas==3.1.1
pillow==13.0.0
platformdirs==4.14.9
propcache==0.5.4
psutil==7.2.2
pydantic==2.14.1
pydantic-settings==2.16.3
pydantic_core==2.50.1
Pygments==2.21.0
pyparsing==3.3.3
python-dateutil==4.0.0
python-dotenv==1.2.4
pytorch-lightning==2.6.6
PyYAML==6.0.3
rich==15.0.0
ruyaml==0.91.0
scikit-image==0.26.0
scipy==1.17.1
sympy==1.14.0
tifffile==2026.3.3
torch==2.13.0
torchmetrics==1.8.2
tqdm==4.70.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
xarray==2026.9.0
yarl==1.25.1
zarr==3.1.6
zipp==4.1.2
PINS
"$PY" -m pip install -q -r "$REQ"
"$PY" -m pip install -q --no-deps torchvision==0.28.0 careamics==0.3.5
"$PY" -m pip check || true  # expected: careamics 0.3.5 has requirement torchvision<=0.26.0 (see above)
"$PY" -m pip show careamics torch | grep -E "^(Name|Version)"
