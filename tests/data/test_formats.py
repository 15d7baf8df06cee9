"""Readers of the official on-disk formats users bring (COCO/Flickr30k Karpathy JSON, NoCaps,
VQAv2/OK-VQA/GQA/TextVQA, ScienceQA, MMMU parquet, ImageNet folders, webdataset shards,
MMC4/OBELICS JSONL), each on a tiny fixture written in that format by the format's own tooling
where one exists (pycocotools reads the COCO-format files back; webdataset.TarWriter writes the
shards; pyarrow the parquet), then: records, split sizes, a pipeline batch of the right task
under the batch contract, and the VQA evaluator's accuracy against hand-computed values.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from mmjax import batch as batch_lib
from mmjax.data import datasets, pipeline, preprocess
from mmjax.data.builders import manual
from mmjax.evaluators import common as eval_common

pycocotools_coco = pytest.importorskip("pycocotools.coco")
wds = pytest.importorskip("webdataset")

SIZE = 32  # data.image_size of these tests (conftest.SMALL); fixture images are 48x40.
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
           (200, 30, 200)]


def write_image(path, colour=(200, 30, 30), fmt="JPEG", mode="RGB"):
  """A 48x40 image of one colour (greyscale when mode='L')."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.new("RGB", (48, 40), colour)
  img.convert(mode).save(path, format=fmt)


def write_json(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(data, f)


# ---- fixtures in the official formats -------------------------------------------------------

def write_coco(root):
  """COCO 2014 caption annotations (read back with pycocotools) and Karpathy's split JSON of
  the same images; one greyscale JPEG and one corrupt file among the training images."""
  images = [("train2014", 9, "restval"), ("train2014", 25, "train"), ("val2014", 42, "val"),
            ("val2014", 73, "test"), ("train2014", 30, "train")]
  coco_json = {"info": {}, "licenses": [], "images": [], "annotations": []}
  ann_id = 0
  for k, (folder, cocoid, _) in enumerate(images):
    name = f"COCO_{folder}_{cocoid:012d}.jpg"
    coco_json["images"].append({"id": cocoid, "file_name": name, "width": 48, "height": 40})
    for j in range(5 if k else 6):  # COCO has 5-7 references per image.
      ann_id += 1
      coco_json["annotations"].append({"id": ann_id, "image_id": cocoid,
                                       "caption": f"picture {cocoid} caption {j}. "})
    path = os.path.join(root, folder, name)
    if k == 4:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated jpeg")
    else:
      write_image(path, COLOURS[k], mode="L" if k == 1 else "RGB")
  write_json(os.path.join(root, "annotations", "captions_2014.json"), coco_json)
  coco = pycocotools_coco.COCO(os.path.join(root, "annotations", "captions_2014.json"))
  karpathy = []
  for k, (folder, cocoid, split) in enumerate(images):
    img = coco.loadImgs(cocoid)[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=cocoid))
    karpathy.append({"filepath": folder, "filename": img["file_name"], "imgid": k,
                     "split": split, "cocoid": cocoid, "sentids": [a["id"] for a in anns],
                     "sentences": [{"raw": a["caption"], "tokens": a["caption"].split(),
                                    "imgid": k, "sentid": a["id"]} for a in anns]})
  write_json(os.path.join(root, "dataset_coco.json"), {"images": karpathy, "dataset": "coco"})
  return coco


def write_flickr30k(root):
  entries = []
  for k, split in enumerate(["train", "train", "test"]):
    name = f"{1000 + k}.jpg"
    write_image(os.path.join(root, "flickr30k-images", name), COLOURS[k])
    entries.append({"filename": name, "imgid": k, "split": split,
                    "sentences": [{"raw": f"flickr {k} sentence {j}", "imgid": k}
                                  for j in range(5)]})
  write_json(os.path.join(root, "dataset_flickr30k.json"),
             {"images": entries, "dataset": "flickr30k"})


def write_nocaps(root):
  data = {"info": {}, "licenses": [], "images": [], "annotations": []}
  for k, domain in enumerate(["in-domain", "out-domain"]):
    name = f"{k:04x}abcd.jpg"
    data["images"].append({"id": k, "file_name": name, "width": 48, "height": 40,
                           "domain": domain, "open_images_id": f"{k:04x}abcd"})
    data["annotations"] += [{"id": 10 * k + j, "image_id": k, "caption": f"nocaps {k} {j}"}
                            for j in range(10)]
    write_image(os.path.join(root, "validation", name), COLOURS[k])
  write_json(os.path.join(root, "nocaps_val_4500_captions.json"), data)
  return pycocotools_coco.COCO(os.path.join(root, "nocaps_val_4500_captions.json"))


# VQAv2 validation: the answers the VQA evaluator test scores.
VQA_QUESTIONS = [  # (image_id, question_id, question, 10 answers, multiple_choice_answer)
    (42, 420, "Is it red?", ["yes"] * 10, "yes"),
    (42, 421, "How many?", ["two"] * 2 + ["three"] * 8, "three"),
    (73, 730, "What colour?", ["blue"] * 10, "blue"),
]


def write_vqav2(root, prefix="v2_"):
  questions = [{"image_id": i, "question_id": q, "question": text}
               for i, q, text, _, _ in VQA_QUESTIONS]
  anns = [{"image_id": i, "question_id": q, "question_type": "what", "answer_type": "other",
           "multiple_choice_answer": mc,
           "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": n + 1}
                       for n, a in enumerate(answers)]}
          for i, q, _, answers, mc in VQA_QUESTIONS]
  head = {"info": {}, "license": {}, "data_subtype": "val2014"}
  write_json(os.path.join(root, f"{prefix}OpenEnded_mscoco_val2014_questions.json"),
             dict(head, task_type="OpenEnded", data_type="mscoco", questions=questions))
  write_json(os.path.join(root, f"{prefix}mscoco_val2014_annotations.json"),
             dict(head, data_type="mscoco", annotations=anns))
  for k, image_id in enumerate((42, 73)):
    write_image(os.path.join(root, "val2014", f"COCO_val2014_{image_id:012d}.jpg"), COLOURS[k])


def write_gqa(root):
  write_json(os.path.join(root, "val_balanced_questions.json"), {
      "201": {"imageId": "n1", "question": "Is the ball red?", "answer": "no",
              "fullAnswer": "No, the ball is blue.", "types": {"structural": "verify"}},
      "202": {"imageId": "n1", "question": "What is it?", "answer": "ball",
              "fullAnswer": "It is a ball."}})
  write_image(os.path.join(root, "images", "n1.jpg"))


def write_textvqa(root):
  write_json(os.path.join(root, "TextVQA_0.5.1_val.json"), {
      "dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1",
      "data": [{"question": "What brand?", "image_id": "003a8ae2ef43b901", "question_id": 34602,
                "answers": ["nokia"] * 7 + ["nokia phone"] * 3, "image_classes": ["phone"],
                "set_name": "val"}]})
  write_image(os.path.join(root, "train_images", "003a8ae2ef43b901.jpg"))


def write_scienceqa(root):
  def problem(split, image, answer):
    return {"question": "Which is a mammal?", "choices": ["frog", "dog", "trout"],
            "answer": answer, "hint": "Pick one animal.", "image": image, "split": split,
            "subject": "natural science", "lecture": "", "solution": ""}
  problems = {"1": problem("train", "image.png", 1), "2": problem("train", None, 1),
              "3": problem("val", "image.png", 0), "4": problem("test", "image.png", 2)}
  write_json(os.path.join(root, "problems.json"), problems)
  write_json(os.path.join(root, "pid_splits.json"),
             {"train": ["1", "2"], "val": ["3"], "test": ["4"], "minival": ["3"]})
  for pid in ("1", "3", "4"):
    split = problems[pid]["split"]
    write_image(os.path.join(root, "images", split, pid, "image.png"), fmt="PNG")


def write_mmmu(root):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  Image.new("RGB", (48, 40), (10, 20, 30)).save(buf, format="PNG")
  image = {"bytes": buf.getvalue(), "path": "img.png"}
  rows = [
      {"id": "validation_Art_1", "question": "<image 1> Which style?",
       "options": "['Baroque', 'Cubism', 'Gothic']", "answer": "B", "image_1": image,
       "image_2": None, "question_type": "multiple-choice", "subfield": "History"},
      {"id": "validation_Art_2", "question": "<image 1> Year?", "options": "[]",
       "answer": "1907", "image_1": image, "image_2": None, "question_type": "open",
       "subfield": "History"},
  ]
  os.makedirs(os.path.join(root, "Art"), exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows),
                 os.path.join(root, "Art", "validation-00000-of-00001.parquet"))


def write_imagenet(root):
  wnids = ["n01440764", "n01443537"]
  for split, per_class in (("train", (2, 1)), ("val", (1, 1))):
    for c, (wnid, n) in enumerate(zip(wnids, per_class)):
      for k in range(n):
        write_image(os.path.join(root, split, wnid, f"{wnid}_{k}.JPEG"), COLOURS[c])
  with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
    f.write("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")


def write_webdataset(root):
  os.makedirs(os.path.join(root, "train"), exist_ok=True)
  for shard in range(2):
    with wds.TarWriter(os.path.join(root, "train", f"{shard:05d}.tar")) as sink:
      for k in range(3):
        key = f"{shard:05d}{k:04d}"
        sample = {"__key__": key, "jpg": np.full((40, 48, 3), 40 * k, np.uint8),
                  "json": {"url": f"http://example.com/{key}.jpg", "width": 48}}
        if not (shard == 1 and k == 2):  # One sample lost its caption: dropped.
          sample["txt"] = f"web caption {key}"
        sink.write(sample)


def write_mmc4(root):
  doc = {"url": "http://example.com/page",
         "text_list": ["S0.", "S1.", "S2.", "S3."],
         "image_info": [{"image_name": "b.jpg", "matched_text_index": 2, "matched_sim": 0.3,
                         "raw_url": "http://x/b.jpg"},
                        {"image_name": "a.jpg", "matched_text_index": 0, "matched_sim": 0.3,
                         "raw_url": "http://x/a.jpg"},
                        {"image_name": "gone.jpg", "matched_text_index": 3, "matched_sim": 0.2,
                         "raw_url": "http://x/gone.jpg"}],
         "similarity_matrix": [[0.3, 0.1, 0.1, 0.1]] * 3}
  no_images = {"url": "u2", "text_list": ["Only text."],
               "image_info": [{"image_name": "gone2.jpg", "matched_text_index": 0}]}
  os.makedirs(os.path.join(root, "train"), exist_ok=True)
  with zipfile.ZipFile(os.path.join(root, "train", "docs_shard_0_v2.jsonl.zip"), "w") as z:
    z.writestr("docs_shard_0_v2.jsonl", json.dumps(doc) + "\n" + json.dumps(no_images) + "\n")
  write_image(os.path.join(root, "images", "a.jpg"), COLOURS[0])
  write_image(os.path.join(root, "images", "b.jpg"), COLOURS[1])


def write_obelics(root):
  doc = {"texts": ["Intro.", None, "Middle.", None, "End."],
         "images": [None, "https://cdn.example.com/p/img1.jpg?x=1", None, "img2.png", None],
         "metadata": "[]", "general_metadata": "{}"}
  os.makedirs(os.path.join(root, "train"), exist_ok=True)
  with open(os.path.join(root, "train", "obelics-00000.jsonl"), "w") as f:
    f.write(json.dumps(doc) + "\n")
  write_image(os.path.join(root, "images", "img1.jpg"), COLOURS[2])
  write_image(os.path.join(root, "images", "img2.png"), COLOURS[3], fmt="PNG")


WRITERS = {"coco_captions": ("coco", write_coco), "flickr30k": ("flickr30k", write_flickr30k),
           "nocaps": ("nocaps", write_nocaps), "vqav2": ("vqav2", write_vqav2),
           "okvqa": ("okvqa", lambda r: write_vqav2(r, prefix="")),
           "gqa": ("gqa", write_gqa), "textvqa": ("textvqa", write_textvqa),
           "scienceqa": ("scienceqa", write_scienceqa), "mmmu": ("mmmu", write_mmmu),
           "imagenet": ("imagenet", write_imagenet),
           "webdataset": ("webdataset", write_webdataset),
           "mmc4": ("mmc4", write_mmc4), "obelics": ("obelics", write_obelics)}


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  """Every format's fixture under one manual_dir; the pycocotools objects for the checks."""
  root = str(tmp_path_factory.mktemp("manual"))
  written = {name: writer(os.path.join(root, sub)) for name, (sub, writer) in WRITERS.items()}
  return root, written


@pytest.fixture(scope="module")
def formats_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("formats_data"))


def source(manual_dir, data_dir, name, split):
  return datasets.load_source(name, split, data_dir=data_dir, manual_dir=manual_dir[0],
                              image_size=SIZE)


def text(v):
  return v.decode("utf-8") if isinstance(v, bytes) else v


def shorter_side(blob):
  return min(preprocess.decode_png(blob).size)


# ---- records --------------------------------------------------------------------------------

def test_coco_karpathy_records_match_pycocotools(manual_dir, formats_data_dir):
  coco = manual_dir[1]["coco_captions"]
  sizes = {s: len(source(manual_dir, formats_data_dir, "coco_captions", s))
           for s in ("train", "validation", "test")}
  assert sizes == {"train": 3, "validation": 1, "test": 1}  # train + restval -> train.
  for split in sizes:
    src = source(manual_dir, formats_data_dir, "coco_captions", split)
    for i in range(len(src)):
      r = src[i]
      anns = coco.loadAnns(coco.getAnnIds(imgIds=int(r["image_id"])))
      assert [text(c) for c in r["captions"]] == [a["caption"].strip() for a in anns]
      if r["image"]:  # The corrupt file is stored empty (on_bad_example decides later).
        img = preprocess.decode_png(r["image"])
        assert img.size == (38, 32) and img.mode == "RGB"  # 48x40 -> shorter side 32.
  train = source(manual_dir, formats_data_dir, "coco_captions", "train")
  assert sorted(len(train[i]["image"]) == 0 for i in range(3)) == [False, False, True]


def test_flickr30k_and_nocaps_records(manual_dir, formats_data_dir):
  flickr = source(manual_dir, formats_data_dir, "flickr30k", "train")
  assert len(flickr) == 2
  assert len(source(manual_dir, formats_data_dir, "flickr30k", "test")) == 1
  assert [text(c) for c in flickr[0]["captions"]] == [f"flickr 0 sentence {j}" for j in range(5)]
  nocaps = source(manual_dir, formats_data_dir, "nocaps", "validation")
  coco = manual_dir[1]["nocaps"]
  assert len(nocaps) == len(coco.getImgIds()) == 2
  for i in range(2):
    r = nocaps[i]
    img_id = int(r["image_id"])
    assert text(r["domain"]) == coco.loadImgs(img_id)[0]["domain"]
    assert [text(c) for c in r["captions"]] == \
        [a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))]
    assert shorter_side(r["image"]) == SIZE


@pytest.mark.parametrize("name", ["vqav2", "okvqa"])
def test_vqav2_records_group_questions_per_image(manual_dir, formats_data_dir, name):
  src = source(manual_dir, formats_data_dir, name, "validation")
  assert len(src) == 2
  assert os.path.isdir(os.path.join(formats_data_dir, name, f"{SIZE}px"))  # Named by the key.
  r = src[0]
  assert text(r["image_id"]) == "42"
  assert [text(q) for q in r["questions"]] == ["Is it red?", "How many?"]
  assert [text(a) for a in r["answer"]] == ["yes", "three"]
  assert np.asarray(r["answers"]).shape == (2, 10)
  assert [text(a) for a in r["answers"][1]] == ["two"] * 2 + ["three"] * 8
  assert shorter_side(r["image"]) == SIZE


def test_gqa_and_textvqa_records(manual_dir, formats_data_dir):
  gqa = source(manual_dir, formats_data_dir, "gqa", "validation")
  assert len(gqa) == 1
  assert [text(a) for a in gqa[0]["answer"]] == ["no", "ball"]
  assert [text(a) for a in gqa[0]["answers"][1]] == ["ball"] * 10  # GQA: exact match.
  tv = source(manual_dir, formats_data_dir, "textvqa", "validation")
  assert [text(a) for a in tv[0]["answer"]] == ["nokia"]  # The most common of the 10.
  assert [text(q) for q in tv[0]["question_ids"]] == ["34602"]


def test_multiple_choice_records(manual_dir, formats_data_dir):
  train = source(manual_dir, formats_data_dir, "scienceqa", "train")
  assert len(train) == 1  # The text-only problem is left out.
  r = train[0]
  assert [text(o) for o in r["options"]] == ["frog", "dog", "trout"]
  assert int(r["answer_index"]) == 1 and text(r["answer"]) == "dog"
  assert text(r["context"]) == "Pick one animal."
  assert len(source(manual_dir, formats_data_dir, "scienceqa", "test")) == 1
  mmmu = source(manual_dir, formats_data_dir, "mmmu", "validation")
  assert len(mmmu) == 1  # The open question is left out.
  assert [text(o) for o in mmmu[0]["options"]] == ["Baroque", "Cubism", "Gothic"]
  assert text(mmmu[0]["answer"]) == "Cubism" and int(mmmu[0]["answer_index"]) == 1
  assert text(mmmu[0]["subject"]) == "Art"
  assert shorter_side(mmmu[0]["image"]) == SIZE


def test_imagenet_folders(manual_dir, formats_data_dir):
  train = source(manual_dir, formats_data_dir, "imagenet", "train")
  val = source(manual_dir, formats_data_dir, "imagenet", "validation")
  assert (len(train), len(val)) == (3, 2)
  got = sorted((int(train[i]["label"]), text(train[i]["class_name"])) for i in range(3))
  assert got == [(0, "tench"), (0, "tench"), (1, "goldfish")]
  assert all(text(val[i]["wnid"]) == ["n01440764", "n01443537"][int(val[i]["label"])]
             for i in range(2))


def test_webdataset_shards_written_by_tarwriter(manual_dir, formats_data_dir):
  src = source(manual_dir, formats_data_dir, "webdataset", "train")
  assert len(src) == 5  # 6 samples, one without a caption.
  keys = sorted(text(src[i]["key"]) for i in range(5))
  assert keys[0] == "00000.tar/000000000"
  r = next(src[i] for i in range(5) if text(src[i]["key"]) == "00000.tar/000000001")
  assert [text(c) for c in r["captions"]] == ["web caption 000000001"]
  assert json.loads(text(r["meta"]))["url"] == "http://example.com/000000001.jpg"
  pixels = np.asarray(preprocess.decode_png(r["image"]))
  assert pixels.shape == (32, 38, 3) and abs(int(pixels.mean()) - 40) <= 2


def test_interleaved_jsonl_documents(manual_dir, formats_data_dir):
  mmc4 = source(manual_dir, formats_data_dir, "mmc4", "train")
  assert len(mmc4) == 1  # The document whose only image is missing is skipped.
  r = mmc4[0]
  # a.jpg before S0, b.jpg before S2; the missing image's sentence joins the chunk before it.
  assert [text(t) for t in r["texts"]] == ["", "S0. S1.", "S2. S3."]
  colours = [np.asarray(preprocess.decode_png(b)).reshape(-1, 3).mean(0) for b in r["images"]]
  np.testing.assert_allclose(colours, [COLOURS[0], COLOURS[1]], atol=3)
  obelics = source(manual_dir, formats_data_dir, "obelics", "train")
  assert [text(t) for t in obelics[0]["texts"]] == ["Intro.", "Middle.", "End."]
  assert len(obelics[0]["images"]) == 2


def test_missing_copy_says_what_to_download_and_where(tmp_path):
  empty, formats_data_dir = str(tmp_path / "manual"), str(tmp_path / "data")
  with pytest.raises(manual.MissingDataError) as e:
    datasets.prepare("vqav2", data_dir=formats_data_dir, manual_dir=empty, image_size=SIZE)
  message = str(e.value)
  assert os.path.join(empty, "vqav2", "v2_OpenEnded_mscoco_val2014_questions.json") in message
  assert "https://visualqa.org/download.html" in message
  with pytest.raises(manual.MissingDataError, match=r"dataset_coco\.json.*caption_datasets"):
    datasets.prepare("coco_captions", data_dir=formats_data_dir, manual_dir=empty,
                     image_size=SIZE)
  # ImageNet's official validation archive is flat: a clear error instead of an empty split.
  write_imagenet(os.path.join(empty, "imagenet"))
  flat = os.path.join(empty, "imagenet", "val")
  for wnid in os.listdir(flat):
    for name in os.listdir(os.path.join(flat, wnid)):
      os.rename(os.path.join(flat, wnid, name), os.path.join(flat, name))
    os.rmdir(os.path.join(flat, wnid))
  with pytest.raises(ValueError, match=r"imagenet/val has no <wnid>/ class folders"):
    datasets.prepare("imagenet", data_dir=formats_data_dir, manual_dir=empty, image_size=SIZE)


# ---- pipelines and an evaluator -------------------------------------------------------------

@pytest.mark.parametrize("name,task,split,required", [
    ("coco_captions", "caption", "train", ("image", "text", "tokens", "loss_mask")),
    ("webdataset", "caption", "train", ("image", "text", "tokens", "loss_mask")),
    ("imagenet", "caption", "validation", ("image", "text", "tokens", "loss_mask")),
    ("vqav2", "vqa", "validation", ("image", "tokens", "loss_mask")),
    ("scienceqa", "vqa", "train", ("image", "tokens", "loss_mask")),
    ("mmc4", "interleaved", "train", ("media", "media_mask", "tokens", "media_locations",
                                      "loss_mask")),
    ("obelics", "interleaved", "train", ("media", "media_mask", "tokens", "media_locations",
                                         "loss_mask")),
    ("mmmu", "vqa", "validation", ("image", "tokens", "loss_mask")),
    ("textvqa", "lm", "validation", ("tokens", "loss_mask")),
])
def test_pipeline_batch_of_the_task(manual_dir, formats_data_dir, make_config, tok, name, task,
                                    split, required):
  train = split == "train"
  cfg = make_config(datasets=(name,), task=task, split=split, manual_dir=manual_dir[0],
                    batch_size=2 if name in ("coco_captions", "webdataset", "imagenet",
                                             "vqav2") else 1)
  cfg.unlock()
  cfg.data_dir = formats_data_dir
  it = pipeline.make_pipeline(cfg, tokenizer=tok, process_index=0, process_count=1,
                              train=train)
  batch = next(it)
  batch_lib.validate_batch(batch, required=required)
  b = cfg.batch_size
  if "image" in batch:
    assert batch["image"].shape == (b, SIZE, SIZE, 3)
  elif "media" in batch:
    assert batch["media"].shape == (b, cfg.max_media, 1, SIZE, SIZE, 3)
    assert batch["media_mask"].sum() == 2 and batch["media_locations"].sum() == 2
  assert batch["loss_mask"].sum() > 0
  if name == "coco_captions":
    # The corrupt image is skipped under the default policy within a few draws...
    for _ in range(3):
      next(it)
    assert it.stats()["skipped"] >= 1
    # ... and stops evaluation under 'raise', naming the record and field.
    cfg = make_config(datasets=(name,), task=task, split="train", manual_dir=manual_dir[0],
                      batch_size=1, on_bad_example="raise")
    cfg.unlock()
    cfg.data_dir = formats_data_dir
    it = pipeline.make_pipeline(cfg, tokenizer=tok, process_index=0, process_count=1,
                                train=False)
    with pytest.raises(preprocess.BadExample, match=r"coco_captions/train record 2: .*'image'"):
      for _ in range(3):
        next(it)


def test_multiple_choice_record_becomes_a_lettered_prompt(make_config, tok):
  from mmjax.data import tasks  # pylint: disable=import-outside-toplevel
  proc = tasks.ExampleProcessor("scienceqa", 0, make_config(task="vqa"), tok, train=False,
                                frames_per_media=1)
  # pylint: disable-next=protected-access
  proc._qa_row = lambda prompt, target, blob, rng: (prompt, target)
  record = {"image": b"", "question": b"Which is a mammal?", "context": b"Pick one.",
            "options": [b"frog", b"dog"], "answer": b"dog"}
  assert proc._process(record, None) == (  # pylint: disable=protected-access
      "Pick one. Question: Which is a mammal? Options: A. frog B. dog Answer:", "dog")


def test_vqa_evaluator_accuracy_on_vqav2_fixture(manual_dir, formats_data_dir, make_config,
                                                 monkeypatch):
  from mmjax.evaluators import EvalContext  # pylint: disable=import-outside-toplevel
  from mmjax.evaluators import vqa  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  data = make_config(manual_dir=manual_dir[0])
  data.unlock()
  data.data_dir = formats_data_dir
  records = eval_common.load_records(data, "validation", dataset="vqav2")
  assert [r["questions"] for r in records] == [["Is it red?", "How many?"], ["What colour?"]]
  predictions = ["Yes", "2", "red"]  # The model's answers, one per question in order.

  def fake_answers(context, params, images, questions, *args):
    assert images.shape == (3, SIZE, SIZE, 3)
    assert questions == ["Is it red?", "How many?", "What colour?"]
    return predictions
  monkeypatch.setattr(vqa, "answer_questions", fake_answers)

  class Family:
    family_name = "fake"
    decode_step = None
  cfg = ml_collections.ConfigDict(dict(type="vqa", split="validation", dataset="vqav2"))
  results = vqa.VQAEvaluator("vqa", cfg, EvalContext(Family(), data, None)).run(None)
  # "Yes" -> 1; "2" vs 2x"two" 8x"three": (2 * 1/3 + 8 * 2/3) / 10 = 0.6; "red" vs "blue": 0.
  assert results["vqa/num_questions"] == 3
  assert results["vqa/accuracy"] == pytest.approx((1.0 + 0.6 + 0.0) / 3)


def test_multiple_choice_evaluator_uses_the_records_options(manual_dir, formats_data_dir,
                                                            make_config, monkeypatch):
  from mmjax.evaluators import EvalContext  # pylint: disable=import-outside-toplevel
  from mmjax.evaluators import multiple_choice  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  data = make_config(manual_dir=manual_dir[0])
  data.unlock()
  data.data_dir = formats_data_dir
  seen = []

  def fake_scores(context, params, image, prompt, options):
    seen.append((prompt, tuple(options)))
    # Log-likelihoods that always prefer "dog".
    return np.array([-5.0 if o != "dog" else -1.0 for o in options]), np.ones(len(options))
  monkeypatch.setattr(multiple_choice, "option_scores", fake_scores)

  class Family:
    family_name = "fake"
    predict_logits = None
  results = {}
  for split in ("train", "test"):  # Correct answers: "dog" (train), "trout" (test).
    cfg = ml_collections.ConfigDict(dict(type="multiple_choice", split=split,
                                         dataset="scienceqa", baselines=False))
    results[split] = multiple_choice.MultipleChoiceEvaluator(
        "mc", cfg, EvalContext(Family(), data, None)).run(None)
  assert results["train"]["mc/accuracy"] == 1.0 and results["test"]["mc/accuracy"] == 0.0
  assert seen[0] == ("<image>Question: Pick one animal. Which is a mammal? Answer:",
                     ("frog", "dog", "trout"))
  assert multiple_choice.question_rows([{"options": ["a", "b"], "question": "Q?",
                                         "answer": "b", "context": ""}]) == \
      [(0, "Q?", ("a", "b"), "b")]


def test_zeroshot_evaluator_on_imagenet_folders(manual_dir, formats_data_dir, make_config,
                                                monkeypatch):
  from mmjax.evaluators import EvalContext  # pylint: disable=import-outside-toplevel
  from mmjax.evaluators import zeroshot  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  data = make_config(manual_dir=manual_dir[0])
  data.unlock()
  data.data_dir = formats_data_dir
  source(manual_dir, formats_data_dir, "imagenet", "train")  # Prepared: names from metadata.
  assert datasets.class_names("imagenet", **datasets.source_kwargs(data)) == ["tench",
                                                                              "goldfish"]
  # A fake two-tower whose image embedding is the mean colour and whose text embedding of a
  # prompt is the colour its class name stands for here (tench: red, goldfish: green).
  colour_of = {"tench": COLOURS[0], "goldfish": COLOURS[1]}

  class Embedder:
    def __init__(self, *args):
      del args

    def images(self, params, images):
      return images.mean(axis=(1, 2))

    def texts(self, params, texts):
      names = [next(n for n in colour_of if n in t) for t in texts]
      return np.array([(np.array(colour_of[n]) / 127.5 - 1) for n in names])
  monkeypatch.setattr(zeroshot.emb_lib, "Embedder", Embedder)
  cfg = ml_collections.ConfigDict(dict(type="zeroshot", dataset="imagenet", split="validation",
                                       templates=["a photo of a {}."], baselines=True))
  results = zeroshot.ZeroShotEvaluator("zs", cfg, EvalContext(None, data, None)).run(None)
  assert results["zs/num_images"] == 2 and results["zs/num_classes"] == 2
  assert results["zs/top1"] == 1.0 and results["zs/baseline_chance_top1"] == 0.5


def test_retrieval_and_captioning_evaluators_read_caption_datasets(
    manual_dir, formats_data_dir, make_config, monkeypatch):
  from mmjax.evaluators import EvalContext  # pylint: disable=import-outside-toplevel
  from mmjax.evaluators import captioning, retrieval  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  data = make_config(manual_dir=manual_dir[0])
  data.unlock()
  data.data_dir = formats_data_dir

  class Embedder:  # Image: its mean colour; caption "flickr k ...": the colour of image k.
    def __init__(self, *args):
      del args

    def images(self, params, images):
      return images.mean(axis=(1, 2))

    def texts(self, params, texts):
      return np.array([np.array(COLOURS[int(t.split()[1])]) / 127.5 - 1 for t in texts])
  monkeypatch.setattr(retrieval.emb_lib, "Embedder", Embedder)
  cfg = ml_collections.ConfigDict(dict(type="retrieval", dataset="flickr30k", split="train"))
  results = retrieval.RetrievalEvaluator("r", cfg, EvalContext(None, data, None)).run(None)
  assert results["r/i2t_recall@1"] == 1.0 and results["r/t2i_recall@1"] == 1.0

  # Captioning on the COCO Karpathy test image: a prediction equal to one of its references
  # scores BLEU-1 = BLEU-4 = 1 (CIDEr is 0 on a one-image set: every n-gram's IDF is log 1).
  monkeypatch.setattr(captioning, "generate_captions",
                      lambda context, params, images, *args: ["picture 73 caption 0."])

  class Family:
    family_name = "fake"
    decode_step = None
  cfg = ml_collections.ConfigDict(dict(type="captioning", dataset="coco_captions", split="test"))
  results = captioning.CaptioningEvaluator("c", cfg, EvalContext(Family(), data, None)).run(None)
  assert results["c/example"] == "'picture 73 caption 0.' (reference: 'picture 73 caption 0.')"
  assert results["c/bleu1"] == pytest.approx(1.0) and results["c/bleu4"] == pytest.approx(1.0)
  assert results["c/cider"] == 0.0


def test_to_png_resizes_the_shorter_side_and_reports_corrupt_bytes():
  for fmt, (w, h), want in (("JPEG", (640, 480), (85, 64)), ("PNG", (100, 300), (64, 192)),
                            ("JPEG", (50, 40), (80, 64))):  # Also upsamples small images.
    buf = io.BytesIO()
    Image.new("CMYK" if fmt == "JPEG" else "L", (w, h), 90).save(buf, format=fmt)
    img = preprocess.decode_png(manual.to_png(buf.getvalue(), 64))  # RGB, or this raises.
    assert img.size == want
  with pytest.raises(ValueError, match="cannot decode image"):
    manual.to_png(b"\x89PNG\r\n\x1a\n truncated", 64)


def test_threaded_conversion_keeps_the_order():
  import time  # pylint: disable=import-outside-toplevel

  def slow(i):
    time.sleep(0.002 * ((7 * i) % 5))  # Later items often finish first.
    return i
  examples = ((k, {"image": manual.Pending(slow, k), "images": [manual.Pending(slow, k), b"x"],
                   "id": str(k)}) for k in range(40))
  out = list(manual.resolved_in_order(examples, threads=3))
  assert [k for k, _ in out] == list(range(40))
  assert all(ex == {"image": k, "images": [k, b"x"], "id": str(k)} for k, ex in out)
