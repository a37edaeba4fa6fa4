"""The model of a deployment's own that the tiers serve beside the pretrained names: the tiny
model repo holds it, Kubernetes mode declares it (the chart's ``models`` value), local mode finds
it in ``--model-repo``. No torch here: fixtures import it cheaply."""

CUSTOM_MODEL = "tiny_karaoke"
CUSTOM_SOURCES = ("vocals", "accompaniment")
