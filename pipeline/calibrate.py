"""Stage calibrate: data/cifar10.npz -> data/gamma.json, SEL's threshold on |grad|."""

from sel.calibration import calibrate_gamma
from sel.cli import stage
from sel.dataset import Cifar
from sel.experiments import scoring_trainer
from sel.files import write_json
from sel.params import load_params


@stage
def main():
    params = load_params()
    data = Cifar.load("data/cifar10.npz")
    trainer = scoring_trainer(params, data)
    c = params.calibrate
    result = calibrate_gamma(trainer, c.batch_size, c.percentile, c.mode)
    write_json("data/gamma.json", result)
    print(f"gamma = {result['gamma']:.3e} (p{c.percentile:g} of |grad|, {c.mode} mode, "
          f"{result['batch_size']} images)")


if __name__ == "__main__":
    main()
