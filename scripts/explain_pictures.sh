#!/usr/bin/env bash
# Regenerate the README's `imagegen explain` pictures and the sampling animation from the shipped
# checkpoints (run from anywhere, after retraining a checkpoint; needs `pip install -e ".[viz]"`).
#
#   scripts/explain_pictures.sh                 # the pictures, from the inputs committed in docs/images
#   scripts/explain_pictures.sh --inputs NPZ    # first remake those inputs from CIFAR-10 (cifar10_jpeg.npz)
#
# The inputs: docs/images/photo_horse_28x28.png is the central 28x28 crop of CIFAR-10 test image 7000
# (a horse) in greyscale; docs/images/digit_with_photo_patch.png is the MNIST test digit
# tests/images/mnist_test_2.png with a 10x10 piece of that photo (rows/columns 4..13) pasted at rows
# and columns 16..25.
set -euo pipefail
cd "$(dirname "$0")/.."
img=docs/images
digits=(--image tests/images/mnist_test_0.png --image tests/images/mnist_test_1.png --image tests/images/mnist_test_2.png)

if [[ "${1:-}" == "--inputs" ]]; then
    python - "$2" <<'PY'
import io
import sys

import numpy as np
from PIL import Image

with np.load(sys.argv[1]) as z:
    k = 7000
    assert str(z["class_names"][z["y_test"][k]]) == "horse"
    jpeg = z["jpeg_test"][z["offsets_test"][k] : z["offsets_test"][k + 1]].tobytes()
photo = Image.open(io.BytesIO(jpeg)).convert("L").crop((2, 2, 30, 30))
photo.save("docs/images/photo_horse_28x28.png")
digit = np.array(Image.open("tests/images/mnist_test_2.png").convert("L"))
digit[16:26, 16:26] = np.array(photo)[4:14, 4:14]
Image.fromarray(digit).save("docs/images/digit_with_photo_patch.png")
PY
fi

imagegen explain nll --image $img/digit_with_photo_patch.png --out $img/explain_nll.png
imagegen explain nll --image $img/photo_horse_28x28.png --out $img/explain_nll_photo.png
imagegen explain attention --checkpoint mnist_transformer_2d --image $img/photo_horse_28x28.png --pixel 18,20 \
    --out $img/explain_attention.png
for name in row_lstm gated_pixelcnn diagonal_bilstm transformer_2d; do
    imagegen explain receptive-field --checkpoint mnist_$name --pixel 14,14 "${digits[@]}" \
        --out $img/explain_receptive_field_$name.png
done
imagegen sample --num 16 --seed 0 --out $img/sample_default.png --animate $img/sample_animation.gif
