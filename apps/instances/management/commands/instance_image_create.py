from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_create_image",
    "Create an image of an instance's root disk (Nova's createImage); --wait until it is uploaded.",
    option="snapshot",
)
