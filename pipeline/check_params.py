"""Stage check_params: validate the whole of params.yaml before any other stage runs.

Every other stage depends only on the keys it reads, so a mistyped key that none of them lists
(`data.train_per_clas`, a top-level `sede`) would change no stage and pass unseen. This stage
depends on the whole file, refuses it in one line, and writes a constant marker that `download`
depends on: a valid change re-runs only this stage (seconds), never the data.
"""

from sel.core.cli import stage
from sel.core.files import staged_outputs
from sel.config.params import load_params

MARKER = "data/params-checked"


@stage
def main():
    params = load_params()
    with staged_outputs(MARKER) as (marker,):
        marker.write_text("params.yaml is valid\n")
    print(f"params.yaml: valid ({len(params.train_stages.names())} experiments x "
          f"{len(params.seeds)} seeds)")


if __name__ == "__main__":
    main()
