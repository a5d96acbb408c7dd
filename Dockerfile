# nbt: Neural Baby Talk on current PyTorch (GPU).
#   docker build -t nbt .
#   docker run --gpus all --ipc=host -it -v /path/to/coco:/workspace/nbt/data/coco nbt \
#       python main.py --path_opt cfgs/normal_coco_res101.yml
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

# Java for the PTB tokenizer and METEOR (pycocoevalcap); a CJK font for Chinese captions on pictures.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        default-jre-headless make fonts-wqy-zenhei && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/nbt
# The same install as the README: the project and its dependencies from pyproject.toml
# (torch / torchvision already come with the base image).
COPY pyproject.toml README.md ./
COPY misc misc
COPY pooling pooling
COPY prepro prepro
COPY tools tools
COPY cfgs cfgs
COPY main.py demo.py Makefile ./
COPY data/README.md data/README.md
COPY data/coco/coco_class_name.txt data/coco/coco_class_name_zh.txt data/coco/
RUN python -m pip install --no-cache-dir -e ".[test]"
COPY tests tests

CMD ["python", "main.py"]
