"""sd-scripts' DreamBooth-style dataset, rewritten for the tiny trainer.

Covers what kr renders: `--dataset_config` (strictly validated, value fallbacks subset -> dataset
-> [general] -> training argument -> default) or the legacy `--train_data_dir` `N_name` folders;
captions (`caption_extension` default `.caption`, class tokens, prefix/suffix, shuffle, dropout,
wildcards); sd-scripts' bucket list, bucket choice, resize-and-crop and per-epoch shuffle; latent
and SDXL text-encoder output caches in sd-scripts' `.npz` layout next to the images; the validation
split (`validation_split` / `validation_seed`: a training and a validation copy of each dataset).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from kohya_runner.tiny import schema

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"]
TE_OUTPUTS_SUFFIX = "_te_outputs.npz"


# ---------------------------------------------------------------------------------------------
# configuration -> parameters
# ---------------------------------------------------------------------------------------------

@dataclass
class SubsetParams:
    image_dir: Optional[str] = None
    num_repeats: int = 1
    shuffle_caption: bool = False
    caption_separator: str = ","
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    secondary_separator: Optional[str] = None
    enable_wildcard: bool = False
    color_aug: bool = False
    flip_aug: bool = False
    face_crop_aug_range: Optional[tuple] = None
    random_crop: bool = False
    caption_prefix: Optional[str] = None
    caption_suffix: Optional[str] = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0
    custom_attributes: Optional[dict] = None
    resize_interpolation: Optional[str] = None
    # DreamBooth style
    is_reg: bool = False
    class_tokens: Optional[str] = None
    caption_extension: str = ".caption"
    cache_info: bool = False
    alpha_mask: Optional[bool] = None
    # fine-tuning / masked-loss styles (validated, not trained on)
    metadata_file: Optional[str] = None
    conditioning_data_dir: Optional[str] = None
    img_count: int = 0  # filled in when the folder is read


@dataclass
class DatasetParams:
    resolution: Optional[tuple] = None
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    prior_loss_weight: float = 1.0
    network_multiplier: float = 1.0
    validation_split: float = 0.0
    validation_seed: Optional[int] = None
    resize_interpolation: Optional[str] = None
    debug_dataset: bool = False
    max_token_length: Optional[int] = None


def load_user_config(file) -> dict:
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"file not found / ファイルが見つかりません: {path}")
    name = path.name.lower()
    if name.endswith(".json"):
        try:
            with open(path, "r", encoding="utf-8") as handle:
                return json.load(handle)
        except Exception:
            logger.error(f"Error on parsing JSON config file. Please check the format. / JSON 形式の設定ファイルの読み込みに失敗しました。文法が正しいか確認してください。: {path}")
            raise
    if name.endswith(".toml"):
        import toml

        try:
            return toml.load(path)
        except Exception:
            logger.error(f"Error on parsing TOML config file. Please check the format. / TOML 形式の設定ファイルの読み込みに失敗しました。文法が正しいか確認してください。: {path}")
            raise
    raise ValueError(f"not supported config file format / 対応していない設定ファイルの形式です: {path}")


def subsets_from_train_data_dir(train_data_dir, reg_data_dir) -> list[dict]:
    """The legacy convention: every `<N>_<class tokens>` folder directly below is a subset."""

    def repeats_and_tokens(name: str) -> tuple[int, str]:
        tokens = name.split("_")
        try:
            repeats = int(tokens[0])
        except ValueError:
            logger.warning(f"ignore directory without repeats / 繰り返し回数のないディレクトリを無視します: {name}")
            return 0, ""
        return repeats, "_".join(tokens[1:])

    def subsets(base_dir, is_reg: bool) -> list[dict]:
        if base_dir is None or not Path(base_dir).is_dir():
            return []
        found = []
        for sub in Path(base_dir).iterdir():
            if not sub.is_dir():
                continue
            repeats, class_tokens = repeats_and_tokens(sub.name)
            if repeats < 1:
                continue
            found.append({"image_dir": str(sub), "num_repeats": repeats, "is_reg": is_reg,
                          "class_tokens": class_tokens})
        return found

    return subsets(train_data_dir, False) + subsets(reg_data_dir, True)


def validate_user_config(user_config: dict, args) -> dict:
    validator = schema.dataset_config_validator(support_controlnet=bool(args.masked_loss))
    try:
        return validator(user_config, [])
    except schema.MultipleInvalid:
        logger.error("Invalid user config / ユーザ設定の形式が正しくないようです")
        raise


def validate_argparse_values(args) -> None:
    try:
        schema.argparse_validator(support_controlnet=bool(args.masked_loss))(args, [])
    except schema.MultipleInvalid:
        logger.error("Invalid cmdline parsed arguments. This should be a bug. / コマンドラインのパース結果が正しくないようです。プログラムのバグの可能性が高いです。")
        raise


def blueprint(user_config: dict, args) -> list[tuple[DatasetParams, list[SubsetParams]]]:
    """Each dataset's parameters and its subsets', resolved through sd-scripts' fallback chain."""
    config = validate_user_config(user_config, args)
    validate_argparse_values(args)
    renames = schema.ARGPARSE_TO_CONFIG
    argparse_config = {renames.get(k, k): v for k, v in vars(args).items()}
    general = config.get("general", {})
    plan = []
    for dataset_config in config.get("datasets", []):
        subsets = [_params(SubsetParams, [subset, dataset_config, general, argparse_config])
                   for subset in dataset_config.get("subsets", [])]
        params = _params(DatasetParams, [dataset_config, general, argparse_config])
        plan.append((params, subsets))
    return plan


def _params(klass, fallbacks: list[dict]):
    values = {}
    for name, default in asdict(klass()).items():
        values[name] = next((c[name] for c in fallbacks if c.get(name) is not None), default)
    return klass(**values)


# ---------------------------------------------------------------------------------------------
# buckets
# ---------------------------------------------------------------------------------------------

def make_bucket_resolutions(max_reso, min_size=256, max_size=1024, divisible=64) -> list[tuple[int, int]]:
    """sd-scripts' fixed bucket list: the square bucket plus, for each width, the tallest height
    (multiple of `divisible`, <= max_size) within the area; both orientations."""
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos = set()
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


class BucketManager:
    def __init__(self, no_upscale, max_reso, min_size, max_size, reso_steps):
        self.no_upscale = no_upscale
        self.max_reso = max_reso
        self.max_area = None if max_reso is None else max_reso[0] * max_reso[1]
        self.min_size, self.max_size, self.reso_steps = min_size, max_size, reso_steps
        self.resos: list[tuple[int, int]] = []
        self.reso_to_id: dict = {}
        self.buckets: list[list] = []

    def make_buckets(self):
        self.set_predefined_resos(make_bucket_resolutions(self.max_reso, self.min_size, self.max_size,
                                                          self.reso_steps))

    def set_predefined_resos(self, resos):
        self.predefined_resos = list(resos)
        self.predefined_resos_set = set(resos)
        self.predefined_aspect_ratios = np.array([w / h for w, h in resos])

    def add_if_new_reso(self, reso):
        if reso not in self.reso_to_id:
            self.reso_to_id[reso] = len(self.resos)
            self.resos.append(reso)
            self.buckets.append([])

    def add_image(self, reso, key):
        self.buckets[self.reso_to_id[reso]].append(key)

    def shuffle(self):
        for bucket in self.buckets:
            random.shuffle(bucket)

    def sort(self):
        order = sorted(self.resos)
        self.buckets = [self.buckets[self.reso_to_id[r]] for r in order]
        self.reso_to_id = {r: i for i, r in enumerate(order)}
        self.resos = order

    def round_to_steps(self, x):
        x = int(x + 0.5)
        return x - x % self.reso_steps

    def select_bucket(self, image_width, image_height):
        aspect_ratio = image_width / image_height
        if not self.no_upscale:
            reso = (image_width, image_height)
            if reso not in self.predefined_resos_set:
                errors = self.predefined_aspect_ratios - aspect_ratio
                reso = self.predefined_resos[int(np.abs(errors).argmin())]
            # scale so the image covers the bucket, then it is center-cropped
            if aspect_ratio > reso[0] / reso[1]:
                scale = reso[1] / image_height
            else:
                scale = reso[0] / image_width
            resized_size = (int(image_width * scale + 0.5), int(image_height * scale + 0.5))
        else:
            if image_width * image_height > self.max_area:
                resized_width = math.sqrt(self.max_area * aspect_ratio)
                resized_height = self.max_area / resized_width
                b_width_rounded = self.round_to_steps(resized_width)
                b_height_in_wr = self.round_to_steps(b_width_rounded / aspect_ratio)
                ar_width_rounded = b_width_rounded / b_height_in_wr
                b_height_rounded = self.round_to_steps(resized_height)
                b_width_in_hr = self.round_to_steps(b_height_rounded * aspect_ratio)
                ar_height_rounded = b_width_in_hr / b_height_rounded
                if abs(ar_width_rounded - aspect_ratio) < abs(ar_height_rounded - aspect_ratio):
                    resized_size = (b_width_rounded, int(b_width_rounded / aspect_ratio + 0.5))
                else:
                    resized_size = (int(b_height_rounded * aspect_ratio + 0.5), b_height_rounded)
            else:
                resized_size = (image_width, image_height)
            reso = (resized_size[0] - resized_size[0] % self.reso_steps,
                    resized_size[1] - resized_size[1] % self.reso_steps)
        self.add_if_new_reso(reso)
        return reso, resized_size, (reso[0] / reso[1]) - aspect_ratio


def get_crop_ltrb(bucket_reso, image_size):
    """Crop box in bucket pixels, SAI-style (for SDXL's crop conditioning and flips)."""
    bucket_ar = bucket_reso[0] / bucket_reso[1]
    image_ar = image_size[0] / image_size[1]
    if bucket_ar > image_ar:
        resized_width, resized_height = bucket_reso[1] * image_ar, bucket_reso[1]
    else:
        resized_width, resized_height = bucket_reso[0], bucket_reso[0] / image_ar
    crop_left = (bucket_reso[0] - resized_width) // 2
    crop_top = (bucket_reso[1] - resized_height) // 2
    return crop_left, crop_top, crop_left + resized_width, crop_top + resized_height


# ---------------------------------------------------------------------------------------------
# images and captions
# ---------------------------------------------------------------------------------------------

def glob_images(directory) -> list[str]:
    import glob

    paths = set()
    for ext in IMAGE_EXTENSIONS:
        paths.update(glob.glob(os.path.join(glob.escape(str(directory)), "*" + ext)))
    return sorted(paths)


def split_train_val(paths: list[str], is_training_dataset: bool, validation_split: float,
                    validation_seed: Optional[int]) -> list[str]:
    """sd-scripts' split_train_val: shuffle (with the validation seed, else the global state as it is),
    then the training copy takes the first ceil(n*(1-split)), the validation copy the last round(n*split)."""
    dataset = list(zip(paths, [None] * len(paths)))
    if validation_seed is not None:
        logger.info(f"Using validation seed: {validation_seed}")
        prevstate = random.getstate()
        random.seed(validation_seed)
        random.shuffle(dataset)
        random.setstate(prevstate)
    else:
        random.shuffle(dataset)
    paths, _sizes = zip(*dataset)  # an empty subset fails to unpack here, as in sd-scripts
    paths = list(paths)
    if is_training_dataset:
        return paths[0:math.ceil(len(paths) * (1 - validation_split))]
    return paths[len(paths) - round(len(paths) * validation_split):]


def image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def load_image(path: str, alpha: bool = False) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = "RGBA" if alpha else "RGB"
            if image.mode != mode:
                image = image.convert(mode)
            return np.array(image, np.uint8)
    except Exception:
        logger.error(f"Error loading file: {path}")
        raise


_INTERPOLATIONS = {"lanczos": "LANCZOS", "nearest": "NEAREST", "bilinear": "BILINEAR", "linear": "BILINEAR",
                   "bicubic": "BICUBIC", "cubic": "BICUBIC", "area": "BOX", "box": "BOX"}


def resize_image(image: np.ndarray, width: int, height: int, interpolation: str | None) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking, Lanczos when enlarging (sd-scripts'
    default), or the named interpolation."""
    from PIL import Image

    source = Image.fromarray(image)
    if interpolation is None:
        name = "BOX" if width * height < source.width * source.height else "LANCZOS"
    else:
        name = _INTERPOLATIONS[interpolation]
    return np.array(source.resize((width, height), getattr(Image.Resampling, name)))


def trim_and_resize(random_crop: bool, image: np.ndarray, reso, resized_size, interpolation=None):
    """Resize to cover the bucket, then crop to it (centre, or random with random_crop)."""
    height, width = image.shape[0:2]
    original_size = (width, height)
    if (width, height) != tuple(resized_size):
        image = resize_image(image, resized_size[0], resized_size[1], interpolation)
    height, width = image.shape[0:2]
    if width > reso[0]:
        trim = width - reso[0]
        left = trim // 2 if not random_crop else random.randint(0, trim)
        image = image[:, left:left + reso[0]]
    if height > reso[1]:
        trim = height - reso[1]
        top = trim // 2 if not random_crop else random.randint(0, trim)
        image = image[top:top + reso[1]]
    assert image.shape[0] == reso[1] and image.shape[1] == reso[0], \
        f"internal error, illegal trimmed size: {image.shape}, {reso}"
    return image, original_size, get_crop_ltrb(reso, original_size)


def read_caption(image_path: str, caption_extension: str, enable_wildcard: bool) -> str | None:
    base = os.path.splitext(image_path)[0]
    tokens = base.split("_")
    base_face = "_".join(tokens[:-4]) if len(tokens) >= 5 else base
    for caption_path in (base + caption_extension, base_face + caption_extension):
        if not os.path.isfile(caption_path):
            continue
        with open(caption_path, "rt", encoding="utf-8") as handle:
            try:
                lines = handle.readlines()
            except UnicodeDecodeError:
                logger.error(f"illegal char in file (not UTF-8) / ファイルにUTF-8以外の文字があります: {caption_path}")
                raise
        assert len(lines) > 0, f"caption file is empty / キャプションファイルが空です: {caption_path}"
        if enable_wildcard:
            return "\n".join(line.strip() for line in lines if line.strip() != "")
        return lines[0].strip()
    return None


def process_caption(subset: SubsetParams, caption: str, current_epoch: int, current_step: int,
                    max_train_steps: int) -> str:
    """sd-scripts' per-sample caption pipeline (prefix/suffix, dropout, wildcards, shuffle...)."""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix

    drop = subset.caption_dropout_rate > 0 and random.random() < subset.caption_dropout_rate
    drop = drop or (subset.caption_dropout_every_n_epochs > 0
                    and current_epoch % subset.caption_dropout_every_n_epochs == 0)
    if drop:
        return ""

    if subset.enable_wildcard:
        if "\n" in caption:
            caption = random.choice(caption.split("\n"))
        open_, close = "⦅", "⦆"
        while open_ in caption or close in caption:
            open_, close = open_ + "⦅", close + "⦆"
        caption = caption.replace("{{", open_).replace("}}", close)
        caption = re.sub(r"\{([^}]+)\}", lambda m: random.choice(m.group(1).split("|")), caption)
        caption = caption.replace(open_, "{").replace(close, "}")
    else:
        caption = caption.split("\n")[0]

    if subset.shuffle_caption or subset.token_warmup_step > 0 or subset.caption_tag_dropout_rate > 0:
        caption = _shuffle_and_drop_tags(subset, caption, current_step, max_train_steps)

    if subset.secondary_separator:
        caption = caption.replace(subset.secondary_separator, subset.caption_separator)
    return caption


def _shuffle_and_drop_tags(subset: SubsetParams, caption: str, current_step: int, max_train_steps: int) -> str:
    separator = subset.caption_separator
    fixed, suffix = [], []
    if subset.keep_tokens_separator and subset.keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(subset.keep_tokens_separator, 1)
        if subset.keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(subset.keep_tokens_separator, 1)
            suffix = [t.strip() for t in suffix_part.split(separator) if t.strip()]
        fixed = [t.strip() for t in fixed_part.split(separator) if t.strip()]
        flex = [t.strip() for t in flex_part.split(separator) if t.strip()]
    else:
        tokens = [t.strip() for t in caption.strip().split(separator)]
        flex = tokens[:]
        if subset.keep_tokens > 0:
            fixed, flex = flex[:subset.keep_tokens], tokens[subset.keep_tokens:]

    if subset.token_warmup_step < 1:  # a fraction of the run, resolved once
        subset.token_warmup_step = math.floor(subset.token_warmup_step * max_train_steps)
    if subset.token_warmup_step and current_step < subset.token_warmup_step:
        length = math.floor(current_step * ((len(flex) - subset.token_warmup_min) / subset.token_warmup_step)) \
            + subset.token_warmup_min
        flex = flex[:length]

    if subset.shuffle_caption:
        random.shuffle(flex)
    if subset.caption_tag_dropout_rate > 0:
        flex = [t for t in flex if random.random() >= subset.caption_tag_dropout_rate]
    return ", ".join(fixed + flex + suffix)


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------

@dataclass
class ImageInfo:
    key: str
    num_repeats: int
    caption: str
    is_reg: bool
    path: str
    image_size: Optional[tuple] = None
    resized_size: Optional[tuple] = None
    bucket_reso: Optional[tuple] = None
    latents: object = None
    latents_flipped: object = None
    latents_original_size: Optional[tuple] = None
    latents_crop_ltrb: Optional[tuple] = None
    te_outputs: Optional[tuple] = None  # SDXL (hidden_state1, hidden_state2, pool2)


class DreamBoothDataset:
    # is_training_dataset False: the validation copy (its part of each split subset, repeats 1, no reg images)
    def __init__(self, params: DatasetParams, subsets: list[SubsetParams], is_training_dataset: bool = True):
        assert params.resolution is not None, "resolution is required / resolution（解像度）指定は必須です"
        self.params = params
        self.is_training_dataset = is_training_dataset
        self.width, self.height = params.resolution
        self.batch_size = params.batch_size
        self.enable_bucket = params.enable_bucket
        self.min_bucket_reso = self.max_bucket_reso = self.bucket_reso_steps = None
        self.bucket_no_upscale = False
        if self.enable_bucket:
            self._set_bucket_limits(params)
        self.subsets: list[SubsetParams] = []
        self.image_data: dict[str, ImageInfo] = {}
        self.image_to_subset: dict[str, SubsetParams] = {}
        self.tag_frequency: dict[str, dict[str, int]] = {}
        self.bucket_info: dict | None = None
        self.current_epoch = 0
        self.seed = 0
        self.num_train_images = 0
        self.num_reg_images = 0
        self._register_subsets(subsets)

    def _set_bucket_limits(self, params: DatasetParams):
        steps = params.bucket_reso_steps
        low, high = params.min_bucket_reso, params.max_bucket_reso
        if low % steps != 0:
            adjusted = low - low % steps
            logger.warning(f"min_bucket_reso is adjusted to be multiple of bucket_reso_steps / min_bucket_resoがbucket_reso_stepsの倍数になるように調整されました: {low} -> {adjusted}")
            low = adjusted
        if high % steps != 0:
            adjusted = high + steps - high % steps
            logger.warning(f"max_bucket_reso is adjusted to be multiple of bucket_reso_steps / max_bucket_resoがbucket_reso_stepsの倍数になるように調整されました: {high} -> {adjusted}")
            high = adjusted
        assert min(params.resolution) >= low, \
            "min_bucket_reso must be equal or less than resolution / min_bucket_resoは最小解像度より大きくできません。解像度を大きくするかmin_bucket_resoを小さくしてください"
        assert max(params.resolution) <= high, \
            "max_bucket_reso must be equal or greater than resolution / max_bucket_resoは最大解像度より小さくできません。解像度を小さくするかmin_bucket_resoを大きくしてください"
        self.min_bucket_reso, self.max_bucket_reso = low, high
        self.bucket_reso_steps = steps
        self.bucket_no_upscale = params.bucket_no_upscale

    # -- images ------------------------------------------------------------------------------

    def _register_subsets(self, subsets: list[SubsetParams]):
        logger.info("prepare images.")
        reg_infos: list[tuple[ImageInfo, SubsetParams]] = []
        for subset in subsets:
            num_repeats = subset.num_repeats if self.is_training_dataset else 1
            if subset.metadata_file is not None or subset.conditioning_data_dir is not None:
                raise NotImplementedError("kohya_runner.tiny trains on DreamBooth-style subsets (image_dir + "
                                          "captions) only; fine-tuning metadata_file and conditioning_data_dir "
                                          "subsets are not supported")
            if num_repeats < 1:
                logger.warning(f"ignore subset with image_dir='{subset.image_dir}': num_repeats is less than 1 / num_repeatsが1を下回っているためサブセットを無視します: {num_repeats}")
                continue
            if any(s.image_dir == subset.image_dir for s in self.subsets):
                logger.warning(f"ignore duplicated subset with image_dir='{subset.image_dir}': use the first one / 既にサブセットが登録されているため、重複した後発のサブセットを無視します")
                continue
            paths, captions = self._load_dir(subset)
            if not paths:
                logger.warning(f"ignore subset with image_dir='{subset.image_dir}': no images found / 画像が見つからないためサブセットを無視します")
                continue
            if subset.is_reg:
                self.num_reg_images += num_repeats * len(paths)
            else:
                self.num_train_images += num_repeats * len(paths)
            for path, caption in zip(paths, captions):
                info = ImageInfo(path, num_repeats, caption, subset.is_reg, path)
                if subset.is_reg:
                    reg_infos.append((info, subset))
                else:
                    self._register(info, subset)
            subset.img_count = len(paths)
            self.subsets.append(subset)

        images_split_name = "train" if self.is_training_dataset else "validation"
        logger.info(f"{self.num_train_images} {images_split_name} images with repeats.")
        logger.info(f"{self.num_reg_images} reg images with repeats.")
        if self.num_train_images < self.num_reg_images:
            logger.warning("some of reg images are not used / 正則化画像の数が多いので、一部使用されない正則化画像があります")
        if self.num_reg_images == 0:
            logger.warning("no regularization images / 正則化画像が見つかりませんでした")
        else:
            self._register_reg_images(reg_infos)

    def _register_reg_images(self, reg_infos):
        # cycle the regularization images until they match the training items
        count, first = 0, True
        while count < self.num_train_images:
            for info, subset in reg_infos:
                if first:
                    self._register(info, subset)
                    count += info.num_repeats
                else:
                    info.num_repeats += 1
                    count += 1
                if count >= self.num_train_images:
                    break
            first = False

    def _register(self, info: ImageInfo, subset: SubsetParams):
        self.image_data[info.key] = info
        self.image_to_subset[info.key] = subset

    def _load_dir(self, subset: SubsetParams) -> tuple[list[str], list[str]]:
        if not os.path.isdir(subset.image_dir):
            logger.warning(f"not directory: {subset.image_dir}")
            return [], []
        paths = glob_images(subset.image_dir)
        if self.params.validation_split > 0.0:
            if subset.is_reg:
                if not self.is_training_dataset:
                    paths = []  # regularization images are never validated on; all of them train
            else:
                paths = split_train_val(paths, self.is_training_dataset, self.params.validation_split,
                                        self.params.validation_seed)
        logger.info(f"found directory {subset.image_dir} contains {len(paths)} image files")
        extension = subset.caption_extension
        if extension and not extension.startswith("."):
            extension = "." + extension
        captions, missing = [], []
        for path in paths:
            caption = read_caption(path, extension, subset.enable_wildcard)
            if caption is None and subset.class_tokens is None:
                logger.warning(f"neither caption file nor class tokens are found. use empty caption for {path} / キャプションファイルもclass tokenも見つかりませんでした。空のキャプションを使用します: {path}")
                captions.append("")
                missing.append(path)
            elif caption is None:
                captions.append(subset.class_tokens)
                missing.append(path)
            else:
                captions.append(caption)
        self._count_tags(os.path.basename(subset.image_dir), captions)
        if missing:
            logger.warning(f"No caption file found for {len(missing)} images. Training will continue without captions for these images. If class token exists, it will be used. / {len(missing)}枚の画像にキャプションファイルが見つかりませんでした。これらの画像についてはキャプションなしで学習を続行します。class tokenが存在する場合はそれを使います。")
            for i, path in enumerate(missing):
                if i >= 5:
                    logger.warning(path + f"... and {len(missing) - 5} more")
                    break
                logger.warning(path)
        return paths, captions

    def _count_tags(self, dir_name: str, captions: list[str]):
        frequency = self.tag_frequency.setdefault(dir_name, {})
        for caption in captions:
            for tag in caption.split(","):
                tag = tag.strip().lower()
                if tag:
                    frequency[tag] = frequency.get(tag, 0) + 1

    # -- buckets -----------------------------------------------------------------------------

    def make_buckets(self):
        logger.info("loading image sizes.")
        for info in self.image_data.values():
            if info.image_size is None:
                info.image_size = image_size(info.path)
        logger.info("make buckets" if self.enable_bucket else "prepare dataset")

        ar_errors = []
        if self.enable_bucket:
            self.bucket_manager = BucketManager(self.bucket_no_upscale, (self.width, self.height),
                                                self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps)
            if not self.bucket_no_upscale:
                self.bucket_manager.make_buckets()
            else:
                logger.warning("min_bucket_reso and max_bucket_reso are ignored if bucket_no_upscale is set, because bucket reso is defined by image size automatically / bucket_no_upscaleが指定された場合は、bucketの解像度は画像サイズから自動計算されるため、min_bucket_resoとmax_bucket_resoは無視されます")
            for info in self.image_data.values():
                info.bucket_reso, info.resized_size, error = self.bucket_manager.select_bucket(*info.image_size)
                ar_errors.append(abs(error))
            self.bucket_manager.sort()
        else:
            self.bucket_manager = BucketManager(False, (self.width, self.height), None, None, None)
            self.bucket_manager.set_predefined_resos([(self.width, self.height)])
            for info in self.image_data.values():
                info.bucket_reso, info.resized_size, _ = self.bucket_manager.select_bucket(*info.image_size)

        for info in self.image_data.values():
            for _ in range(info.num_repeats):
                self.bucket_manager.add_image(info.bucket_reso, info.key)

        if self.enable_bucket:
            self._log_buckets(ar_errors)

        self.bucket_batches = []
        for bucket_index, bucket in enumerate(self.bucket_manager.buckets):
            for batch_index in range(int(math.ceil(len(bucket) / self.batch_size))):
                self.bucket_batches.append((bucket_index, batch_index))
        self.shuffle_buckets()

    def _log_buckets(self, ar_errors):
        self.bucket_info = {"buckets": {}}
        logger.info("number of images (including repeats) / 各bucketの画像枚数（繰り返し回数を含む）")
        for i, (reso, bucket) in enumerate(zip(self.bucket_manager.resos, self.bucket_manager.buckets)):
            if bucket:
                self.bucket_info["buckets"][i] = {"resolution": reso, "count": len(bucket)}
                logger.info(f"bucket {i}: resolution {reso}, count: {len(bucket)}")
        mean_error = float(np.mean(np.abs(np.array(ar_errors)))) if ar_errors else 0.0
        self.bucket_info["mean_img_ar_error"] = mean_error
        logger.info(f"mean ar error (without repeats): {mean_error}")

    def shuffle_buckets(self):
        random.seed(self.seed + self.current_epoch)
        random.shuffle(self.bucket_batches)
        self.bucket_manager.shuffle()

    def set_current_epoch(self, epoch: int):
        if epoch > self.current_epoch:
            logger.info("epoch is incremented. current_epoch: {}, epoch: {}".format(self.current_epoch, epoch))
            for _ in range(epoch - self.current_epoch):
                self.current_epoch += 1
                self.shuffle_buckets()
        elif epoch < self.current_epoch:
            logger.warning("epoch is not incremented. current_epoch: {}, epoch: {}".format(self.current_epoch, epoch))
            self.current_epoch = epoch

    def __len__(self):
        return len(self.bucket_batches)

    def batch_keys(self, index: int) -> list[str]:
        bucket_index, batch_index = self.bucket_batches[index]
        bucket = self.bucket_manager.buckets[bucket_index]
        return bucket[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]

    def verify_bucket_reso_steps(self, min_steps: int):
        assert self.bucket_reso_steps is None or self.bucket_reso_steps % min_steps == 0, \
            f"bucket_reso_steps is {self.bucket_reso_steps}. it must be divisible by {min_steps}.\n" \
            f"bucket_reso_stepsが{self.bucket_reso_steps}です。{min_steps}で割り切れる必要があります"

    def is_latent_cacheable(self) -> bool:
        return all(not (s.color_aug or s.random_crop) for s in self.subsets)

    def is_text_encoder_output_cacheable(self) -> bool:
        return all(not (s.caption_dropout_rate > 0 or s.shuffle_caption or s.caption_tag_dropout_rate > 0
                        or s.token_warmup_step > 0) for s in self.subsets)

    # -- one batch ---------------------------------------------------------------------------

    def load_batch(self, index: int, current_step: int, max_train_steps: int) -> dict:
        images, latents, captions, te_outputs = [], [], [], []
        originals, crops, targets, weights = [], [], [], []
        for key in self.batch_keys(index):
            info = self.image_data[key]
            subset = self.image_to_subset[key]
            weights.append(self.params.prior_loss_weight if info.is_reg else 1.0)
            flipped = subset.flip_aug and random.random() < 0.5
            if info.latents is not None:
                latent = info.latents_flipped if flipped else info.latents
                latents.append(latent)
                original_size, crop_ltrb = info.latents_original_size, info.latents_crop_ltrb
                target_size = (latent.shape[2] * 8, latent.shape[1] * 8)
            else:
                image, original_size, crop_ltrb = self._image_for(info, subset)
                if flipped:
                    image = image[:, ::-1, :].copy()
                images.append(image)
                target_size = (image.shape[1], image.shape[0])
            left = target_size[0] - crop_ltrb[2] if flipped else crop_ltrb[0]
            originals.append((int(original_size[1]), int(original_size[0])))
            crops.append((int(crop_ltrb[1]), int(left)))
            targets.append((int(target_size[1]), int(target_size[0])))
            if info.te_outputs is not None:
                te_outputs.append(info.te_outputs)
                captions.append(info.caption)
            else:
                captions.append(process_caption(subset, info.caption, self.current_epoch, current_step,
                                                max_train_steps))
        return {"images": images or None, "latents": latents or None, "captions": captions,
                "te_outputs": te_outputs or None, "original_sizes_hw": originals, "crop_top_lefts": crops,
                "target_sizes_hw": targets, "loss_weights": weights,
                "network_multiplier": self.params.network_multiplier}

    def _image_for(self, info: ImageInfo, subset: SubsetParams):
        image = load_image(info.path)
        interpolation = subset.resize_interpolation or self.params.resize_interpolation
        if self.enable_bucket:
            return trim_and_resize(subset.random_crop, image, info.bucket_reso, info.resized_size, interpolation)
        height, width = image.shape[0:2]
        if height > self.height or width > self.width:
            assert subset.random_crop, f"image too large, but cropping and bucketing are disabled / 画像サイズが大きいのでface_crop_aug_rangeかrandom_crop、またはbucketを有効にしてください: {info.path}"
            if height > self.height:
                top = random.randint(0, height - self.height)
                image = image[top:top + self.height]
            if width > self.width:
                left = random.randint(0, width - self.width)
                image = image[:, left:left + self.width]
        height, width = image.shape[0:2]
        assert height == self.height and width == self.width, f"image size is small / 画像サイズが小さいようです: {info.path}"
        return image, (width, height), (0, 0, 0, 0)

    def image_for_caching(self, info: ImageInfo):
        """The bucket-sized image the latent cache encodes (the caching path always resizes)."""
        subset = self.image_to_subset[info.key]
        image = load_image(info.path)
        interpolation = subset.resize_interpolation or self.params.resize_interpolation
        return trim_and_resize(False, image, info.bucket_reso, info.resized_size, interpolation)

    # -- metadata ----------------------------------------------------------------------------

    def metadata(self) -> dict:
        subsets = []
        for s in self.subsets:
            subsets.append({
                "img_count": s.img_count, "num_repeats": s.num_repeats, "color_aug": bool(s.color_aug),
                "flip_aug": bool(s.flip_aug), "random_crop": bool(s.random_crop),
                "shuffle_caption": bool(s.shuffle_caption), "keep_tokens": s.keep_tokens,
                "keep_tokens_separator": s.keep_tokens_separator, "secondary_separator": s.secondary_separator,
                "enable_wildcard": bool(s.enable_wildcard), "caption_prefix": s.caption_prefix,
                "caption_suffix": s.caption_suffix, "resize_interpolation": s.resize_interpolation,
                "image_dir": os.path.basename(s.image_dir), "class_tokens": s.class_tokens, "is_reg": s.is_reg,
            })
        return {
            "is_dreambooth": True, "batch_size_per_device": self.batch_size,
            "num_train_images": self.num_train_images, "num_reg_images": self.num_reg_images,
            "resolution": (self.width, self.height), "enable_bucket": bool(self.enable_bucket),
            "min_bucket_reso": self.min_bucket_reso, "max_bucket_reso": self.max_bucket_reso,
            "tag_frequency": self.tag_frequency, "bucket_info": self.bucket_info,
            "resize_interpolation": self.params.resize_interpolation, "subsets": subsets,
        }


class DatasetGroup:
    """All datasets of a run; one 'item' is one homogeneous batch from one bucket."""

    def __init__(self, datasets: list[DreamBoothDataset]):
        self.datasets = datasets
        self.num_train_images = sum(d.num_train_images for d in datasets)
        self.num_reg_images = sum(d.num_reg_images for d in datasets)

    def __len__(self):
        return sum(len(d) for d in self.datasets)

    def locate(self, index: int) -> tuple[DreamBoothDataset, int]:
        for dataset in self.datasets:
            if index < len(dataset):
                return dataset, index
            index -= len(dataset)
        raise IndexError(index)

    def set_current_epoch(self, epoch: int):
        for dataset in self.datasets:
            dataset.set_current_epoch(epoch)

    def image_infos(self):
        for dataset in self.datasets:
            for info in dataset.image_data.values():
                yield dataset, info

    def verify_bucket_reso_steps(self, min_steps: int):
        for dataset in self.datasets:
            dataset.verify_bucket_reso_steps(min_steps)

    def is_latent_cacheable(self) -> bool:
        return all(d.is_latent_cacheable() for d in self.datasets)

    def is_text_encoder_output_cacheable(self) -> bool:
        return all(d.is_text_encoder_output_cacheable() for d in self.datasets)


def build_dataset_group(args) -> tuple[DatasetGroup, Optional[DatasetGroup]]:
    """Read the dataset definition the way sd-scripts does and make the buckets: the training group and,
    when a dataset sets 0 < validation_split <= 1, the validation group (else None)."""
    if args.dataset_config is not None:
        logger.info(f"Loading dataset config from {args.dataset_config}")
        user_config = load_user_config(args.dataset_config)
        ignored = ["train_data_dir", "reg_data_dir", "in_json"]
        if any(getattr(args, name) is not None for name in ignored):
            logger.warning("ignoring the following options because config file is found: {0} / 設定ファイルが利用されるため以下のオプションは無視されます: {0}".format(", ".join(ignored)))
    elif args.in_json is None:
        logger.info("Using DreamBooth method.")
        user_config = {"datasets": [{"subsets": subsets_from_train_data_dir(args.train_data_dir, args.reg_data_dir)}]}
    else:
        logger.info("Training with captions.")
        user_config = {"datasets": [{"subsets": [{"image_dir": args.train_data_dir, "metadata_file": args.in_json}]}]}

    plan = blueprint(user_config, args)
    datasets = []
    for params, subsets in plan:
        _log_dataset_plan(len(datasets), params, subsets)
        datasets.append(DreamBoothDataset(params, subsets))

    # sd-scripts builds the validation copies after all training datasets, from fresh subset objects
    val_datasets = []
    for params, subsets in plan:
        if params.validation_split < 0.0 or params.validation_split > 1.0:
            logging.warning(f"Dataset param `validation_split` ({params.validation_split}) is not a valid number between 0.0 and 1.0, skipping validation split...")
            continue
        if params.validation_split == 0.0:
            continue
        val_datasets.append(DreamBoothDataset(params, [replace(s) for s in subsets], is_training_dataset=False))

    seed = random.randint(0, 2**31)  # the per-epoch shuffle seed is seed + epoch
    for i, dataset in enumerate(datasets):
        logger.info(f"[Dataset {i}]")
        dataset.make_buckets()
        dataset.seed = seed
        dataset.shuffle_buckets()
    for i, dataset in enumerate(val_datasets):
        logger.info(f"[Prepare validation dataset {i}]")
        dataset.make_buckets()
        dataset.seed = seed
        dataset.shuffle_buckets()
    return DatasetGroup(datasets), (DatasetGroup(val_datasets) if val_datasets else None)


def _log_dataset_plan(index: int, params: DatasetParams, subsets: list[SubsetParams]):
    lines = [f"[Dataset {index}]", f"  batch_size: {params.batch_size}", f"  resolution: {params.resolution}",
             f"  enable_bucket: {params.enable_bucket}"]
    if params.enable_bucket:
        lines += [f"  min_bucket_reso: {params.min_bucket_reso}", f"  max_bucket_reso: {params.max_bucket_reso}",
                  f"  bucket_reso_steps: {params.bucket_reso_steps}",
                  f"  bucket_no_upscale: {params.bucket_no_upscale}"]
    for j, subset in enumerate(subsets):
        lines += [f"  [Subset {j} of Dataset {index}]", f'    image_dir: "{subset.image_dir}"',
                  f"    num_repeats: {subset.num_repeats}",
                  f"    shuffle_caption: {subset.shuffle_caption}", f"    keep_tokens: {subset.keep_tokens}",
                  f"    caption_prefix: {subset.caption_prefix}", f"    caption_suffix: {subset.caption_suffix}",
                  f"    is_reg: {subset.is_reg}", f"    class_tokens: {subset.class_tokens}",
                  f"    caption_extension: {subset.caption_extension}"]
    logger.info("\n" + "\n".join(lines) + "\n")
