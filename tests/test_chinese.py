"""Chinese captions: segmentation, visual words and their number, AI Challenger's files and metrics,
the Chinese world, slot rendering. Fixtures cut from AI Challenger's evaluation: tests/fixtures/ai_challenger."""
import hashlib
import json
import re
from argparse import Namespace

import numpy as np
import pytest
import torch

from conftest import ROOT, require, require_java
from nbt.misc.decoding import Decoded
from nbt.misc.io import DataError
from nbt.misc.language import English, language_for, pre_segmented
from nbt.misc.metrics import score_captions
from nbt.misc.slot_filling import fill_slots
from nbt.misc.vocab import ClassNames, VisualWordMatcher, Vocabulary, tokenize
from nbt.prepro.ai_challenger import Reference, image_hash

AIC = ROOT / "tests" / "fixtures" / "ai_challenger"
COCO_ZH = ROOT / "data" / "coco" / "coco_class_name_zh.txt"


@pytest.fixture(scope="module")
def zh():
    return language_for("zh", ClassNames.read(COCO_ZH))


@pytest.fixture(scope="module")
def small_zh():
    return language_for("zh", ClassNames(("狗", "人", "羊", "圆形"), (("狗", "小狗"), ("人", "男孩", "孩子", "男人"),
                                                                    ("羊",), ("圆形", "圆盘"))))


def visual(zh, text):
    tokens = zh.segment(text)
    return tokens, [(v.surface, zh.classes.names[v.cls - 1], v.plural) for v in zh.matcher.match(tokens)]


@pytest.mark.parametrize("text, tokens", [
    ("一个男孩和一个女孩", ["一个", "男孩", "和", "一个", "女孩"]),        # jieba's dictionary has 一个男孩
    ("一个人站着", ["一个", "人", "站", "着"]),                          # jieba's HMM makes 人站
    ("孩子们在玩。", ["孩子", "们", "在", "玩"]),                        # the plural suffix; punctuation dropped
    ("一只小狗\n 在跑 ", ["一只", "小狗", "在", "跑"]),                   # raw AI Challenger text: "\n", spaces
    ("斑马线上有一个人", ["斑马线", "上", "有", "一个", "人"]),
])
def test_segmenter_keeps_class_words_whole_and_splits_cues_off_them(zh, text, tokens):
    assert zh.segment(text) == tokens


@pytest.mark.parametrize("text, found", [
    ("斑马线上有一个人", [("人", "人", 0)]),                             # a zebra crossing is no zebra
    ("一匹斑马站在草地上", [("斑马", "斑马", 0)]),
    ("一只小狗和两只狗", [("小狗", "狗", 0), ("狗", "狗", 1)]),           # fine-grained 小狗, class 狗
    ("一个人吃热狗", [("人", "人", 0), ("热狗", "热狗", 0)]),             # a hot dog is no dog
    ("泰迪熊旁边有一只熊", [("泰迪熊", "泰迪熊", 0), ("熊", "熊", 0)]),
    ("马桶旁边有一匹马", [("马桶", "马桶", 0), ("马", "马", 0)]),
    ("火车站里有一列火车", [("火车", "火车", 0)]),                       # the station is text
    ("人行道上有几个行人", [("行人", "人", 1)]),
])
def test_matcher_finds_class_words_not_words_that_contain_them(zh, text, found):
    assert visual(zh, text)[1] == found


@pytest.mark.parametrize("text, number", [
    ("两只狗在草地上", 1), ("三个人在海边", 1), ("一群羊在吃草", 1), ("一些人在街上", 1), ("几个孩子在玩球", 1),
    ("许多人", 1), ("3个男孩在踢球", 1), ("孩子们在玩", 1), ("两个蓝色的圆盘", 1),
    ("一只小狗在跑", 0), ("一个穿着红色衣服的男人", 0), ("草地上有狗", 0), ("这只狗", 0), ("一对情侣和一个人", 0),
])
def test_number_is_read_from_numerals_measure_words_and_quantifiers(small_zh, text, number):
    [v] = small_zh.matcher.match(small_zh.segment(text))[-1:]
    assert v.plural == number, (text, small_zh.segment(text))


def test_a_cue_belongs_to_its_own_noun_phrase(zh):
    assert visual(zh, "两个男人和一只狗")[1] == [("男人", "人", 1), ("狗", "狗", 0)]
    assert visual(zh, "两个男人牵着狗")[1] == [("男人", "人", 1), ("狗", "狗", 0)]   # 两个 counts the men


def test_english_is_todays_code():
    classes = ClassNames(("person", "dog"), (("person", "people", "man"), ("dog", "puppy")))
    en = language_for("", classes)
    assert isinstance(en, English) and isinstance(en.matcher, VisualWordMatcher)
    assert en.segment("Two men's dogs.") == tokenize("Two men's dogs.")
    vocab = Vocabulary({"1": "UNK"}, classes)
    assert en.render(vocab, "man", 1) == "men" and en.render(vocab, "puppy", 0) == "puppy"
    assert en.join(["two", "dogs"]) == "two dogs" and en.metric_segmenter is None


def test_chinese_slots_render_the_word_and_state_the_number_of_their_cues():
    classes = ClassNames(("圆形", "正方形"), (("圆形", "圆环", "圆盘"), ("正方形", "方框", "方块")))
    lang = language_for("zh", classes)
    vocab = Vocabulary({"1": "两个", "2": "红色", "3": "的", "4": "在", "5": "一个", "6": "旁边", "7": "UNK"},
                       classes, language=lang)
    V = vocab.size
    # 两个 红色 的 [ring] 在 一个 [tile] 旁边, the plural head saying singular for the rings
    d = Decoded(tokens=[1, 2, 3, V + 0, 4, 5, V + 1, 6], plural=[0, 0, 0, 0, 0, 0, 1, 0],
                fine=[-1, -1, -1, 1, -1, -1, 5, -1], score=-1.0)
    proposals = torch.tensor([[0, 0, 10, 10, 1, 0.9], [20, 20, 30, 30, 2, 0.8]])
    cap = fill_slots(d, vocab, proposals)
    assert cap.text == "两个红色的圆环在一个方块旁边"
    assert cap.tagged == "两个红色的[圆环]在一个[方块]旁边"
    assert cap.tokens == ["两个", "红色", "的", "圆环", "在", "一个", "方块", "旁边"]
    assert [(g["word"], g["class"], g["plural"]) for g in cap.grounding] == [("圆环", "圆形", 1), ("方块", "正方形", 0)]


def test_measure_words_are_learned_per_noun_from_the_captions():
    from nbt.misc.chinese import measure_words
    captions = [["一颗", "红色", "的", "星星", "在", "左边"], ["两颗", "星星"], ["一个", "星星"],
                ["一条", "折线", "在", "一个", "圆环", "旁边"], ["一群", "圆环"], ["一群", "圆环"], ["一些", "折线"],
                ["星星"]]
    # majority per noun; 一群 / 一些 count no individual measure; a noun never counted by one is absent
    assert measure_words(captions, {"星星", "折线", "圆环", "方块"}) == {"星星": "颗", "折线": "条", "圆环": "个"}


def test_a_slots_measure_word_agrees_with_the_noun_that_fills_it():
    classes = ClassNames(("星形", "箭头", "圆形"), (("星形", "星星"), ("箭头", "折线"), ("圆形", "圆环")))
    lang = language_for("zh", classes)
    vocab = Vocabulary({"1": "两个", "2": "红色", "3": "的", "4": "在", "5": "一群", "6": "旁边", "7": "一只",
                        "8": "UNK"}, classes, language=lang, agreement={"星星": "颗", "折线": "条", "圆环": "个"})
    V = vocab.size
    # 两个 红色 的 [星星] 在 一只 [折线] 旁边 一群 [圆环]: 个 -> 颗 across 红色的, 只 -> 条; 一群 stays
    d = Decoded(tokens=[1, 2, 3, V + 0, 4, 7, V + 1, 6, 5, V + 2], plural=[0] * 10,
                fine=[-1, -1, -1, 1, -1, -1, 3, -1, -1, 5], score=-1.0)
    proposals = torch.tensor([[0, 0, 10, 10, 1, 0.9], [20, 20, 30, 30, 2, 0.8], [40, 40, 50, 50, 3, 0.8]])
    cap = fill_slots(d, vocab, proposals)
    assert cap.tagged == "两颗红色的[星星]在一条[折线]旁边一群[圆环]"
    assert cap.tokens[:7] == ["两颗", "红色", "的", "星星", "在", "一条", "折线"]
    assert [g["plural"] for g in cap.grounding] == [1, 0, 1]          # the numbers said are unchanged


def test_the_template_says_the_general_measure_and_rendering_restores_the_nouns():
    classes = ClassNames(("星形", "圆形"), (("星形", "星星"), ("圆形", "圆环")))
    lang = language_for("zh", classes)
    vocab = Vocabulary({"1": "UNK"}, classes, language=lang, agreement={"星星": "颗", "圆环": "个"})
    said = ["两颗", "红色", "的", "星星", "和", "一群", "圆环", "一颗", "心"]
    template = lang.template(said, vocab)
    assert template == ["两个", "红色", "的", "星星", "和", "一群", "圆环", "一颗", "心"]   # 心: no class word
    assert lang.agree(template, vocab) == said


def test_chinese_training_targets_carry_the_general_measure_before_nouns(world_zh_dir):
    """The decoder's targets say 个 before a noun whatever the noun (the template does not choose
    the noun); the references keep the captions' own measure words."""
    from conftest import world_options
    from nbt.misc.dataset import CaptionDataset, DataBundle
    bundle = DataBundle.load(world_options(world_zh_dir, language="zh", seq_length=18))
    assert bundle.vocab.agreement["星星"] == "颗" and bundle.vocab.agreement["圆环"] == "个"
    ds = CaptionDataset(bundle, "train", train=False, max_images=40)
    said = {bundle.vocab.word(int(t)) for i in range(len(ds)) for t in ds[(i, 0)]["words"].flatten() if t > 0}
    assert "一个" in said and not said & {"一颗", "两颗", "一条", "一朵", "一枚", "一支", "一顶"}
    refs = {t for caps in bundle.captions for c in caps for t in c}
    assert {"一颗", "一条"} <= refs


def test_scst_scores_the_caption_the_test_time_rendering_gives(world_zh_dir):
    """SCST's reward is computed on the filled caption as evaluation shows it: measures agree."""
    from conftest import world_options
    from nbt.misc.dataset import DataBundle
    from nbt.misc.scst import SelfCritical
    opt = world_options(world_zh_dir, language="zh", seq_length=18)
    bundle = DataBundle.load(opt)
    v = bundle.vocab
    star_class = bundle.classes.word_to_class()["星星"]
    scst = SelfCritical(bundle, opt)
    tokens = torch.tensor([[v.encode("两个"), v.encode("红色"), v.encode("的"), v.size + 0, 0]])
    fine = torch.tensor([[-1, -1, -1, bundle.classes.fine_words.index("星星"), -1]])
    ids = scst.render(tokens, torch.zeros_like(tokens), fine, torch.tensor([[star_class]]))
    assert [v.word(int(i)) for i in ids[0]] == ["两颗", "红色", "的", "星星"]


def test_english_captions_are_not_touched_by_agreement():
    classes = ClassNames(("dog",), (("dog", "puppy"),))
    en = language_for("en", classes)
    assert en.agreement([["a", "puppy"], ["two", "dogs"]]) == {}
    vocab = Vocabulary({"1": "a", "2": "UNK"}, classes)
    assert en.agree(["a", "puppy"], vocab) == ["a", "puppy"] and en.template(["a", "puppy"], vocab) == ["a", "puppy"]


def test_attribute_words_reach_their_noun_through_de():
    from nbt.misc.targets import adjectives_before
    tokens = ["两个", "红色", "的", "圆环"]
    assert adjectives_before(tokens, 3, {"红色"}, {"的"}) == {"红色"}
    assert adjectives_before(tokens, 3, {"红色"}) == set()                  # English: no link words
    assert adjectives_before(["two", "red", "rings"], 2, {"red"}) == {"red"}


# -- AI Challenger's files ----------------------------------------------------------------------------
def test_image_ids_are_the_official_hashes_of_the_reference_file():
    ref = json.loads((AIC / "id_to_words.json").read_text())
    for im in ref["images"]:
        assert image_hash(im["file_name"]) == im["id"] == image_hash(im["file_name"] + ".jpg")


def test_aic_caption_file_prepro_segments_raw_captions(tmp_path):
    from nbt.prepro import prepro_dic_coco
    names = ["3f2a8e1b0c9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f.jpg", "8b7c6d5e4f3f2a8e1b0c9d7e6f5a4b3c2d1e0f9a.jpg"]
    entries = [{"url": f"http://img.example/{n}", "image_id": n, "caption": caps} for n, caps in zip(names, [
        ["一只小狗在草地上奔跑", "草地上有一只狗\n", "一只 白色的小狗在草地上", "一只狗在跑", "绿色的草地上有一只小狗"],
        ["两个男人站在路边", "路边有两个男人", "两个穿着西装的男人", "两个男人在说话", "马路边上站着两个男人"]])]
    train = tmp_path / "caption_train_annotations_20170902.json"
    train.write_text(json.dumps(entries, ensure_ascii=False))
    classes = tmp_path / "classes.txt"
    classes.write_text("人, 男人\n狗, 小狗\n")
    dic = prepro_dic_coco.run(Namespace(
        input_json="", captions_json=[], aic_json=[str(train)], language="", class_name_file=str(classes),
        instances_json=[], split="normal", split_file="", held_out="", robust_max_test=0, word_count_threshold=0,
        output_dic=str(tmp_path / "dic.json"), output_cap=str(tmp_path / "cap.json"), output_df="", seed=1))
    assert dic["language"] == "zh"
    assert [im["id"] for im in dic["images"]] == [
        int(hashlib.sha256(n[:-4].encode()).hexdigest(), 16) % (2 ** 63 - 1) for n in names]
    assert dic["images"][0] == {"split": "train", "file_path": f"caption_train/{names[0]}", "id": dic["images"][0]["id"]}
    caps = json.loads((tmp_path / "cap.json").read_text())
    assert caps[0][1] == ["草地", "上", "有", "一只", "狗"] and caps[0][2][:3] == ["一只", "白色", "的"]
    assert dic["plural_of"] == {"人": "人", "男人": "男人", "狗": "狗", "小狗": "小狗"}
    assert "两个" in dic["ix_to_word"].values()


def test_aic_caption_file_errors_name_the_entry(tmp_path):
    from nbt.prepro.ai_challenger import images_from_aic
    bad = tmp_path / "caption_validation_annotations.json"
    bad.write_text(json.dumps([{"url": "u", "image_id": "a.jpg", "caption": "一只狗"}, {"url": "u", "image_id": "b.jpg"}]))
    with pytest.raises(DataError, match=r"entry 1 needs 'image_id' and 'caption'"):
        images_from_aic([str(bad)], str.split)


@pytest.mark.parametrize("name, message", [
    ("has_null_data.json", r"entry 0 \(d9a9a8cf\w+\): 'caption' is empty"),
    ("key_error.json", r"entry 0 has no 'caption'"),
    ("less_data_number.json", r"1 of the reference's 3 images have no caption \(e\.g\. d9a9a8cf"),
    ("more_data_number.json", r"entry 1: image '\w+0l' is not in the reference file"),
    ("wrong_name.json", r"entry 0: image '89a9a8cf\w+' is not in the reference file"),
])
def test_the_official_error_cases_are_one_line_errors(name, message):
    ref = Reference(AIC / "id_to_words.json")
    with pytest.raises(DataError, match=message) as err:
        ref.read_submission(AIC / name)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_the_official_sample_submission_is_read():
    ref = Reference(AIC / "id_to_words.json")
    sub = ref.read_submission(AIC / "id_to_test_caption.json")
    assert sorted(sub) == sorted(ref.captions) and len(ref.captions[2672643569347560246]) == 5
    assert ref.captions[2672643569347560246][3] == "海边 的 沙滩 上 有 3 个 穿着 泳裤 的 男孩子 在 踢球".split()


# hand-made candidates for the three reference images, raw as a submission holds them
CANDIDATES = {6678090646845985471: "一个戴着帽子的女人坐在海边的椅子上看着大海。",
              2672643569347560246: "沙滩上有三个男孩在踢球",
              487904842962333940: "一个男人和一个女人手拉手走在海边的石滩上"}
# jieba.cut(caption.strip().replace("。", ""), cut_all=False), as the official loadRes segments them
OFFICIAL_SEGMENTS = {6678090646845985471: "一个 戴着 帽子 的 女人 坐在 海边 的 椅子 上 看着 大海",
                     2672643569347560246: "沙滩 上 有 三个 男孩 在 踢球",
                     487904842962333940: "一个 男人 和 一个 女人 手拉手 走 在 海边 的 石滩 上"}
# pycocoevalcap (BLEU, ROUGE-L, CIDEr, METEOR 1.5) on OFFICIAL_SEGMENTS against id_to_words.json's
# captions, computed once with the scorers called directly (no tokenizer), as the official
# evaluation calls them after its PTB step
EXPECTED = {"Bleu_1": 0.797448351057795, "Bleu_2": 0.7504977405634695, "Bleu_3": 0.68084810253664,
            "Bleu_4": 0.6137098104789124, "ROUGE_L": 0.7737137889111061, "CIDEr": 2.897209267217812,
            "METEOR": 0.4492957023023998}


def test_metrics_agree_with_the_official_definition_on_its_reference_file():
    require_java()                                 # METEOR 1.5 runs on Java
    ref = Reference(AIC / "id_to_words.json")
    plain = language_for("zh")                     # no class file: jieba's own precise mode
    hyps = {k: " ".join(plain.segment(v)) for k, v in CANDIDATES.items()}
    assert hyps == OFFICIAL_SEGMENTS
    refs = {k: [" ".join(c) for c in caps] for k, caps in ref.captions.items()}
    overall, per_image = score_captions(refs, hyps, meteor=True, segmenter=plain.metric_segmenter)
    for k, v in EXPECTED.items():
        assert overall[k] == pytest.approx(v, abs=1e-9), k
    assert set(per_image) == set(CANDIDATES)


def test_pre_segmented_text_is_what_ptb_leaves_of_it():
    assert pre_segmented("一个 长 头发 的 女人 ， 坐在 海边 。 A") == ["一个", "长", "头发", "的", "女人", "坐在", "海边", "a"]


# -- the Chinese world ---------------------------------------------------------------------------------
def test_the_chinese_world_has_the_english_worlds_images_objects_and_detections(tmp_path):
    from nbt.prepro.world import WorldConfig, generate
    summaries = {lang: generate(WorldConfig(out=str(tmp_path / lang), n_images=12, seed=5, lang=lang), quiet=True)
                 for lang in ("en", "zh")}
    assert summaries["en"] == summaries["zh"]
    en, zh = tmp_path / "en", tmp_path / "zh"
    for f in sorted((en / "images" / "world").iterdir()):
        assert f.read_bytes() == (zh / "images" / "world" / f.name).read_bytes()
    assert (en / "world_detection.h5").read_bytes() == (zh / "world_detection.h5").read_bytes()
    inst = {k: json.loads((d / "annotations" / "instances_world.json").read_text()) for k, d in (("en", en), ("zh", zh))}
    assert [a["bbox"] for a in inst["en"]["annotations"]] == [a["bbox"] for a in inst["zh"]["annotations"]]
    assert {a["attributes"]["kind"] for a in inst["zh"]["annotations"]} <= set(
        (zh / "world_class_name.txt").read_text().replace("\n", ", ").split(", "))
    assert (zh / "world_class_name.txt").read_text().splitlines()[0] == "圆形, 圆环, 圆盘"
    data = json.loads((zh / "dataset_world.json").read_text())
    sent = data["images"][0]["sentences"][0]
    assert " " not in sent["raw"] and "".join(sent["tokens"]) == sent["raw"].replace("，", "").replace("、", "")
    assert json.loads((zh / "split_noc_world.json").read_text())["held_out"] == ["六边形", "心形"]


# -- the API and the demo's picture ---------------------------------------------------------------------
def test_the_api_captions_a_chinese_run_with_its_grounding(world_zh_run, world_zh_dir):
    from nbt.misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained(world_zh_run)
    image = sorted((world_zh_dir / "images" / "world").glob("*.png"))[0]
    [r] = cap.generate([image], beam_size=2)
    assert cap.vocab.language.code == "zh" and r.source == "run"
    words = [g["word"] for g in r.grounding]
    assert r.tagged.replace("[", "").replace("]", "") == r.caption and " " not in r.caption.strip()
    assert [f"[{w}]" for w in words] == re.findall(r"\[[^\]]*\]", r.tagged)
    assert all(w in cap.classes.fine_words for w in words)


def test_the_demo_picture_draws_chinese_words_in_a_cjk_font(tmp_path, capsys, monkeypatch):
    from PIL import Image
    from nbt import demo
    require(demo.cjk_font() is not None, "a CJK font", "make fonts (apt-get install fonts-wqy-zenhei)")
    image = Image.new("RGB", (128, 128), (235, 235, 235))
    grounding = [
        {"word": "圆环", "region": 0, "box": [10, 10, 50, 50], "class": "圆形", "score": 0.9, "position": 3, "plural": 1},
        {"word": "方块", "region": 1, "box": [70, 70, 110, 110], "class": "正方形", "score": 0.8, "position": 6, "plural": 0}]
    picture = demo.draw(image, {"tagged": "两个红色的[圆环]在一个[方块]旁边", "proposals": [], "grounding": grounding})
    picture.save(tmp_path / "zh.png")                                         # looked at: tests/README
    assert picture.height > 480 and capsys.readouterr().err == ""

    def caption_strip(text):
        drawn = demo.draw(image, {"tagged": text, "proposals": [], "grounding": []})
        return np.asarray(drawn.convert("L"))[480:]                           # (h, W) the caption's strip
    assert (caption_strip("圆") != caption_strip("方")).sum() > 20             # two glyphs, not one blank box
    monkeypatch.setattr(demo, "cjk_font", lambda: None)
    monkeypatch.setattr(demo, "_noticed_no_cjk_font", [])
    assert (caption_strip("圆") == caption_strip("方")).all()                  # without one: no glyphs ...
    err = capsys.readouterr().err
    assert err.startswith("note: no CJK font found") and err.count("\n") == 1   # ... and one notice


def test_aic_eval_scores_the_sample_submission_and_refuses_an_incomplete_one(capsys):
    from nbt.tools import aic_eval
    ref = str(AIC / "id_to_words.json")
    assert aic_eval.main(["--submit", str(AIC / "id_to_test_caption.json"), "--ref", ref]) == 0
    printed = capsys.readouterr().out
    out = json.loads(printed[printed.index("{\n"):])
    assert 0 < out["CIDEr"] < 10 and 0 < out["Bleu_4"] <= out["Bleu_1"] <= 1
    assert aic_eval.main(["--submit", str(AIC / "less_data_number.json"), "--ref", ref]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "have no caption" in err
