"""``shapes_bootstrap``: train the shapes world's generator and reward, check them, publish them.

    zenml pipeline run pipelines.bootstrap.shapes_bootstrap --config configs/shapes_bootstrap.yaml

The two trainings are cached: a second run with the same config reuses them and only re-publishes
(``publish_world`` is never cached, so the published copy exists on whatever machine ran it).
"""

from ops.pipeline import pipeline

from srpo.world.bootstrap import WorldCheckConfig
from srpo.world.generator import GeneratorConfig
from srpo.world.reward import RewardTrainConfig
from srpo.world.shapes import WorldSpec
from steps import check_world, publish_world, train_world_generator, train_world_reward


@pipeline
def shapes_bootstrap(
    world: WorldSpec = WorldSpec(),
    generator: GeneratorConfig = GeneratorConfig(),
    reward: RewardTrainConfig = RewardTrainConfig(),
    checks: WorldCheckConfig = WorldCheckConfig(),
) -> None:
    flux = train_world_generator(generator=generator, world=world)
    clip = train_world_reward(reward=reward, world=world)
    report, _ = check_world(generator=flux, reward=clip, world=world, checks=checks)
    publish_world(generator=flux, reward=clip, checks=report)
