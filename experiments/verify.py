"""Is an image signed by this model? Reads the signature of a job's signed decoder from image files.

python -m experiments.verify --model=runs/t2i_shapes IMAGE.png [IMAGE.jpg ...] [--false_positive_rate=1e-3]

--model is a text-to-image job with a `signature` stage, or the stage's own directory (the extractor and the
message stay with whoever trained the model: an exported model carries the signed decoder, not the detector).
An image larger than the model's images on both sides (an enlarged copy, such as `experiments.sample`'s 2x grid of
one image) is resized back to the model's size; any other is read at its own size (a crop is read as it is). For
each it prints the bits that match the message, the p-value of that many matches for an image without the signature (exact binomial tail), and the
verdict at --false_positive_rate: 'signed' when the p-value is at most it.
"""

from absl import flags

from experiments import common

_MODEL = flags.DEFINE_string('model', None, 'A job with a signature stage, or the signature stage itself.')
_FPR = flags.DEFINE_float('false_positive_rate', 1e-3,
                          'The verdict calls an image signed when its p-value is at most this.')
flags.mark_flags_as_required(['model'])

MIN_SIZE = 16  # the extractor halves an image three times before averaging over it


def main(argv):
  from lgm import files, images, provenance

  paths = argv[1:]
  if not paths:
    raise ValueError('give the image files to verify after the flags: python -m experiments.verify --model=DIR a.png')
  if not 0 < _FPR.value < 1:
    raise ValueError(f'--false_positive_rate must be in (0, 1), got {_FPR.value}.')
  detector = provenance.load_detector(_MODEL.value)
  height, width, channels = detector.image_shape
  print(f'# {detector.bits}-bit signature; signed when p <= {_FPR.value:g} '
        f'(at least {provenance.match_threshold(detector.bits, _FPR.value)} matching bits)')
  signed = 0
  for path in paths:
    if not files.exists(path):
      raise FileNotFoundError(f'{path} does not exist.')
    image = images.read_image(path, (None, None, channels))
    if image.shape[0] > height and image.shape[1] > width:  # an enlarged copy: back to the size it was made at
      image = images.read_image(path, detector.image_shape)
    if min(image.shape[:2]) < MIN_SIZE:
      raise ValueError(f'{path} is {image.shape[1]}x{image.shape[0]}; the detector reads images of at least '
                       f'{MIN_SIZE}x{MIN_SIZE}.')
    verdict = detector.verdicts(image[None], _FPR.value)
    signed += int(verdict['signed'][0])
    print(f"{path}\t{verdict['matches'][0]}/{detector.bits} bits\tp={verdict['p_value'][0]:.3g}\t"
          f"{'signed' if verdict['signed'][0] else 'not signed'}")
  print(f'# {signed} of {len(paths)} signed')


def cli() -> None:
  """The `lgm-verify` command."""
  common.run(main)


if __name__ == '__main__':
  cli()
