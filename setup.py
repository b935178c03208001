from setuptools import find_packages, setup

# The card templates live in the top-level model_cards/ (where users look for them) and ship inside the
# package as distill_trainer.model_cards, so hub.py finds them in editable and regular installs alike.
setup(
    packages=find_packages(include=["distill_trainer", "distill_trainer.*"]) + ["distill_trainer.model_cards"],
    package_dir={"distill_trainer.model_cards": "model_cards"},
    package_data={"distill_trainer.model_cards": ["*.md"], "distill_trainer.study.analysis": ["templates/*.j2"]},
)
