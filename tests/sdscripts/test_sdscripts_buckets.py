"""sdscripts.buckets: sd-scripts' bucket algorithm, hand-worked."""

from __future__ import annotations

import pytest

from kohya_runner.errors import BadInput
from kohya_runner.sdscripts.buckets import bucket_resolutions, bucket_table
from kohya_runner.sdscripts.steps import TrainingPlan, step_math


def test_sd15_buckets_512_from_256_to_1024():
    # area 512*512 = 262144. For each width, height = min(1024, floor(262144 / w / 64) * 64), kept if >= 256:
    # 256->1024, 320->768, 384->640, 448->576, 512->512, 576->448, 640->384, 704->320, 768->320,
    # 832..1024->256; plus all of them transposed.
    expected = sorted({
        (256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320),
        (832, 256), (896, 256), (960, 256), (1024, 256),
        (1024, 256), (768, 320), (640, 384), (576, 448), (320, 704), (320, 768), (256, 832), (256, 896), (256, 960),
        (256, 1024),
    })
    buckets = bucket_resolutions((512, 512), 256, 1024, 64)
    assert buckets == expected
    # 13 widths + 4 transposes not already there ((256,832), (256,896), (256,960), (320,704)) = 17 (contract §2.6)
    assert len(buckets) == 17 and (256, 1024) in buckets and (512, 512) in buckets and buckets[-1] == (1024, 256)


def test_sdxl_buckets_1024_from_512_to_2048():
    # area 1048576: 512->2048, 576->1792, 640->1600, 704->1472, 768->1344, 832->1216, 896->1152, 960->1088,
    # 1024->1024, 1088->960, 1152->896, 1216->832, 1280->768, 1344->768, 1408->704, 1472->704, 1536->640,
    # 1600->640, 1664->576, 1728->576, 1792->576, 1856->512, 1920->512, 1984->512, 2048->512
    half = [
        (512, 2048), (576, 1792), (640, 1600), (704, 1472), (768, 1344), (832, 1216), (896, 1152), (960, 1088),
        (1024, 1024), (1088, 960), (1152, 896), (1216, 832), (1280, 768), (1344, 768), (1408, 704), (1472, 704),
        (1536, 640), (1600, 640), (1664, 576), (1728, 576), (1792, 576), (1856, 512), (1920, 512), (1984, 512),
        (2048, 512),
    ]
    expected = sorted(set(half) | {(h, w) for w, h in half})
    assert bucket_resolutions((1024, 1024), 512, 2048, 64) == expected
    # 25 widths + 8 transposes not already listed: (768,1280), (704,1408), (640,1536), (576,1664), (576,1728),
    # (512,1856), (512,1920), (512,1984)
    assert len(expected) == 33


def test_nearest_aspect_ratio_and_exact_size():
    table = bucket_table([(768, 512), (512, 512), (640, 384), (1000, 1000)], resolution=512)
    got = [(a.bucket, a.resized) for a in table.assignments]
    # 1.5 is nearer 640x384 (1.667, off by 0.167) than 576x448 (1.286, off by 0.214). The bucket is wider than
    # the image, so the width is matched (640/768) and the height cropped: 640x427 -> centre crop 640x384.
    assert got[0] == ((640, 384), (640, 427))
    assert got[1] == ((512, 512), (512, 512))
    assert got[2] == ((640, 384), (640, 384))  # an exact bucket size keeps its bucket
    assert got[3] == ((512, 512), (512, 512))  # downscaled 0.512x


def test_no_upscale_bucket_hand_worked():
    # 1600x900 at 1024x1024, step 64: ar 1.7778, fits the area at 1365.3x768. Rounding the width
    # gives 1344x704 (ar 1.909), rounding the height gives 1344x768 (ar 1.75): the height wins.
    (a,) = bucket_table([(1600, 900)], resolution=1024, bucket_no_upscale=True).assignments
    assert a.resized == (1365, 768) and a.bucket == (1344, 768)
    (small,) = bucket_table([(300, 200)], resolution=1024, bucket_no_upscale=True).assignments
    assert small.resized == (300, 200) and small.bucket == (256, 192)


def test_mixed_sizes_partial_batches_hand_worked():
    # 5 squares, 3 landscape 3:2 (-> 640x384), 2 portrait 2:3 (-> 384x640); 3 repeats, batch 2.
    sizes = [(512, 512)] * 5 + [(768, 512)] * 3 + [(512, 768)] * 2
    table = bucket_table(sizes, resolution=512, num_repeats=3, batch_size=2)
    assert [(b.resolution, b.items, b.batches, b.last_batch) for b in table.buckets] == [
        ((384, 640), 6, 3, 2),
        ((512, 512), 15, 8, 1),
        ((640, 384), 9, 5, 1),
    ]
    assert table.items == 30 and table.batches == 16 and table.partial_batches == 2
    # GA 2 on one GPU: ceil(16 / 2) = 8 steps per epoch; 5 epochs = 40 steps
    steps = step_math(table.bucket_items, 2, TrainingPlan(max_train_epochs=5, gradient_accumulation_steps=2))
    assert (steps.batches_per_epoch, steps.steps_per_epoch, steps.total_steps) == (16, 8, 40)
    # an unbucketed count of ceil(30 / 2) = 15 batches would be wrong: each bucket rounds up on its own


def test_bucket_bounds_sd_scripts_asserts_on():
    with pytest.raises(BadInput, match="min_bucket_reso"):
        bucket_table([(512, 512)], resolution=512, min_bucket_reso=576)
    with pytest.raises(BadInput, match="max_bucket_reso"):
        bucket_table([(512, 512)], resolution=1024, max_bucket_reso=960)
