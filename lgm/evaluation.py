"""Measuring what models learned, as plain numpy on embeddings and labels.

Text-image space (a CLIP model of `lgm.tasks.clip`):
  zero-shot classification: every combination of a dataset's attributes becomes a class whose text
    embedding is the mean over the dataset's caption templates (prompt ensembling, Radford et al. 2021);
    an image's probability of an attribute value is the softmax mass of the classes that have it.
  retrieval: rank all held-out images for each held-out caption (text->image) and all captions for each
    image (image->text). A hit is a retrieved item whose attributes are those the query names: the
    captions of `shapes` name four attributes, not the jitter of one rendering, so several images are
    equally right for a caption (on 1,000 shapes images, demanding the caption's own image caps recall@1
    near 49% for a perfect model). `*_exact` variants require the paired item itself.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np


@dataclasses.dataclass(frozen=True)
class PromptTable:
  """Classes for zero-shot classification: `values[attribute][k]` is class k's value, read from the
  batch field `fields[attribute]`; `prompts[k]` are its captions, one per template."""
  values: dict[str, np.ndarray]
  fields: dict[str, str]
  prompts: list[list[str]]


def _shapes_table() -> PromptTable:
  from lgm.data import shapes
  names = list(shapes.ATTRIBUTES)
  combos = np.array(list(itertools.product(*(range(len(shapes.ATTRIBUTES[n])) for n in names))))
  prompts = [[shapes.format_caption(t, {n: shapes.ATTRIBUTES[n][v] for n, v in zip(names, combo)})
              for t in shapes.TEMPLATES] for combo in combos]
  return PromptTable(values={n: combos[:, i] for i, n in enumerate(names)}, fields={n: n for n in names},
                     prompts=prompts)


def _digits_table() -> PromptTable:
  from lgm.data import digits
  prompts = [[t.format(word=digits.NUMBER_WORDS[d], digit=d) for t in digits.TEMPLATES] for d in range(10)]
  return PromptTable(values={'digit': np.arange(10)}, fields={'digit': 'label'}, prompts=prompts)


PROMPT_TABLES = {'shapes': _shapes_table, 'digits': _digits_table}


def prompt_table(dataset: str) -> PromptTable | None:
  """The zero-shot classes of a dataset whose captions come from known templates, else None."""
  return PROMPT_TABLES[dataset]() if dataset in PROMPT_TABLES else None


def class_embeddings(prompt_embeddings: np.ndarray, num_templates: int) -> np.ndarray:
  """(K * T, D) normalised prompt embeddings, class-major -> (K, D) normalised template means."""
  mean = prompt_embeddings.reshape(-1, num_templates, prompt_embeddings.shape[-1]).mean(axis=1)
  return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def zero_shot_accuracy(image_embeddings: np.ndarray, class_emb: np.ndarray, scale: float,
                       table: PromptTable, labels: dict[str, np.ndarray]) -> dict[str, float]:
  """Per attribute, the fraction of images whose most probable value (marginal over classes) is right;
  `labels[attribute]` holds the true values. Also 'all': every attribute right at once."""
  logits = scale * image_embeddings.astype(np.float64) @ class_emb.T.astype(np.float64)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  correct = {}
  for name, class_values in table.values.items():
    num_values = int(class_values.max()) + 1
    marginal = np.stack([probs[:, class_values == v].sum(axis=1) for v in range(num_values)], axis=1)
    correct[name] = marginal.argmax(axis=1) == labels[name]
  accuracy = {name: float(c.mean()) for name, c in correct.items()}
  if len(correct) > 1:
    accuracy['all'] = float(np.logical_and.reduce(list(correct.values())).mean())
  return accuracy


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
  """similarity (queries, items), relevant (queries, items) bool -> {k: fraction of queries with a
  relevant item among their k most similar}. Ties are broken towards the lower item index."""
  order = np.argsort(-similarity, axis=1, kind='stable')
  hits = np.take_along_axis(relevant, order, axis=1)
  return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def retrieval_metrics(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                      attributes: np.ndarray | None = None, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
  """Text->image and image->text recall@k for paired embeddings (row i of each is one example).

  `attributes` (N, A) ints: what each caption names (= what its image shows); None: only the pair counts.
  Keys 'retrieval_t2i_r1', 'retrieval_i2t_r5', ... and the pair-only 'retrieval_t2i_r1_exact', ...
  """
  similarity = text_embeddings.astype(np.float64) @ image_embeddings.T.astype(np.float64)
  exact = np.eye(len(similarity), dtype=bool)
  same = exact if attributes is None else (attributes[:, None, :] == attributes[None, :, :]).all(-1)
  metrics = {}
  for direction, sim in (('t2i', similarity), ('i2t', similarity.T)):
    for suffix, relevant in (('', same), ('_exact', exact)):
      for k, value in recall_at_k(sim, relevant, ks).items():
        metrics[f'retrieval_{direction}_r{k}{suffix}'] = value
  return metrics


# --- text-to-image ------------------------------------------------------------------------------------

def fidelity(predicted: dict[str, np.ndarray], asked: dict[str, np.ndarray]) -> dict[str, float]:
  """Per attribute, the fraction of generated images whose classifier reading equals what the prompt asked;
  'all' where every attribute is right. Keys: 'fidelity_<attribute>', 'fidelity_all'."""
  right = {name: np.asarray(predicted[name]) == np.asarray(asked[name]) for name in asked}
  metrics = {f'fidelity_{name}': float(r.mean()) for name, r in right.items()}
  metrics['fidelity_all'] = float(np.logical_and.reduce(list(right.values())).mean())
  return metrics


def diversity(features: np.ndarray) -> float:
  """Mean pairwise Euclidean distance between the samples of one prompt, averaged over prompts: `features`
  (prompts, samples, D), e.g. CLIP image embeddings (unit vectors: 0 when every sample is the same image,
  sqrt(2) for orthogonal ones)."""
  features = np.asarray(features, np.float64)
  k = features.shape[1]
  if k < 2:
    raise ValueError(f'diversity needs at least 2 samples per prompt, got {k}.')
  distances = np.linalg.norm(features[:, :, None] - features[:, None, :], axis=-1)
  return float(distances.sum(axis=(1, 2)).mean() / (k * (k - 1)))


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> float:
  """100 * mean over pairs of max(cosine, 0) (Hessel et al. 2021's scale, without their w = 2.5)."""
  cosine = np.sum(image_embeddings * text_embeddings, axis=-1) / (
      np.linalg.norm(image_embeddings, axis=-1) * np.linalg.norm(text_embeddings, axis=-1))
  return float(100.0 * np.maximum(cosine, 0.0).mean())


def caption_retrieval(image_embeddings: np.ndarray, text_embeddings: np.ndarray, captions: list[str]) -> float:
  """Is each generated image retrieved by its own prompt? Image i counts when the caption most similar to
  it (cosine, among the distinct texts of `captions`) is `captions[i]`; chance is 1 / number of distinct."""
  distinct = sorted(set(captions))
  first = {text: captions.index(text) for text in distinct}
  texts = np.asarray(text_embeddings)[[first[t] for t in distinct]]
  images = np.asarray(image_embeddings)
  similarity = (images / np.linalg.norm(images, axis=-1, keepdims=True)) @ (
      texts / np.linalg.norm(texts, axis=-1, keepdims=True)).T
  best = np.asarray(distinct)[similarity.argmax(-1)]
  return float(np.mean(best == np.asarray(captions)))


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased) covariance of (N, D) features, in float64."""
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), the distance behind FID (Heusel et al. 2017).

  The square root is taken as (C1^(1/2) C2 C1^(1/2))^(1/2), whose trace equals that of (C1 C2)^(1/2) and
  which is symmetric positive semi-definite, so two symmetric eigendecompositions give it stably.
  """
  def sqrt_psd(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
  root1 = sqrt_psd(np.asarray(cov1, np.float64))
  middle = sqrt_psd(root1 @ np.asarray(cov2, np.float64) @ root1)
  diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(middle))
