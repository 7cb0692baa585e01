"""``shapes_bootstrap``: train the shapes world's generator and reward, check them, publish them.

    zenml pipeline run pipelines.bootstrap.shapes_bootstrap --config configs/shapes_bootstrap.yaml

The trainings are cached: a second run with the same config reuses them and only re-publishes
(``publish_world`` is never cached, so the published copy exists on whatever machine ran it).
``edit_model: true`` (``configs/shapes_bootstrap_edit.yaml``) also trains the world's edit model from
the generator and publishes it as ``builtin:shapes-kontext``; off by default, so ``make demo`` does not
pay for it (about 2 minutes more on one core).
"""

from ops.pipeline import pipeline

from srpo.world.bootstrap import WorldCheckConfig
from srpo.world.edit_generator import EditGeneratorConfig
from srpo.world.generator import GeneratorConfig
from srpo.world.reward import RewardTrainConfig
from srpo.world.shapes import WorldSpec
from steps import check_world, publish_world, train_world_edit_generator, train_world_generator, train_world_reward


@pipeline
def shapes_bootstrap(
    world: WorldSpec = WorldSpec(),
    generator: GeneratorConfig = GeneratorConfig(),
    reward: RewardTrainConfig = RewardTrainConfig(),
    checks: WorldCheckConfig = WorldCheckConfig(),
    edit: EditGeneratorConfig = EditGeneratorConfig(),
    edit_model: bool = False,
) -> None:
    flux = train_world_generator(generator=generator, world=world)
    clip = train_world_reward(reward=reward, world=world)
    report, _ = check_world(generator=flux, reward=clip, world=world, checks=checks)
    if edit_model:
        kontext = train_world_edit_generator(edit=edit, world=world, generator=flux)
        publish_world(generator=flux, reward=clip, checks=report, edit_model=kontext)
    else:
        publish_world(generator=flux, reward=clip, checks=report)
