"""The labelled query set for search mode: what an agent might ask for, and the tool that does it,
over the tools of real MCP servers (time, fetch, git, everything, filesystem, memory, and vmcp's
OCI registry server). Written in an agent's words, not copied from the descriptions; a query may
accept more than one tool where two do the job equally (reading a file as text)."""

from __future__ import annotations

# query -> the advertised names (backend prefix `{backend}_`) that answer it
QUERIES: dict[str, tuple[str, ...]] = {
    # time
    "what time is it in Tokyo right now": ("time_get_current_time",),
    "current time in a timezone": ("time_get_current_time",),
    "convert 3pm New York time to Berlin time": ("time_convert_time",),
    "translate a time between two timezones": ("time_convert_time",),
    # fetch
    "fetch a web page": ("fetch_fetch",),
    "get the contents of a URL as markdown": ("fetch_fetch",),
    "download the html at this url": ("fetch_fetch",),
    # git
    "show the working tree status of the repository": ("git_git_status",),
    "what changes are staged for commit": ("git_git_diff_staged",),
    "show unstaged changes in the working directory": ("git_git_diff_unstaged",),
    "diff between two branches": ("git_git_diff",),
    "commit my changes with a message": ("git_git_commit",),
    "stage a file for the next commit": ("git_git_add",),
    "unstage everything that is staged": ("git_git_reset",),
    "show the commit history log": ("git_git_log",),
    "create a new git branch": ("git_git_create_branch",),
    "switch to another branch": ("git_git_checkout",),
    "show the contents of a commit": ("git_git_show",),
    "list the git branches": ("git_git_branch",),
    # everything
    "echo back a message": ("everything_echo",),
    "add two numbers together": ("everything_get-sum",),
    "print the environment variables of the server": ("everything_get-env",),
    "return a tiny image": ("everything_get-tiny-image",),
    "compress a file with gzip": ("everything_gzip-file-as-resource",),
    "turn simulated logging on or off": ("everything_toggle-simulated-logging",),
    "a long running operation that reports progress": ("everything_trigger-long-running-operation",),
    "structured content with an output schema": ("everything_get-structured-content",),
    "get resource links": ("everything_get-resource-links",),
    "simulate a deep research query": ("everything_simulate-research-query",),
    "toggle resource subscription updates": ("everything_toggle-subscriber-updates",),
    # filesystem
    "read a text file": ("filesystem_read_text_file", "filesystem_read_file"),
    "read an image file and return it as base64": ("filesystem_read_media_file",),
    "read several files at once": ("filesystem_read_multiple_files",),
    "write content to a new file": ("filesystem_write_file",),
    "edit some lines in a file": ("filesystem_edit_file",),
    "make a new directory": ("filesystem_create_directory",),
    "list the files in a folder": ("filesystem_list_directory", "filesystem_list_directory_with_sizes"),
    "list directory contents with file sizes": ("filesystem_list_directory_with_sizes",),
    "recursive tree of a directory as json": ("filesystem_directory_tree",),
    "rename a file": ("filesystem_move_file",),
    "move a file to another directory": ("filesystem_move_file",),
    "find files matching a glob pattern": ("filesystem_search_files",),
    "file size and modification time metadata": ("filesystem_get_file_info",),
    "which directories am I allowed to access": ("filesystem_list_allowed_directories",),
    # memory
    "create entities in the knowledge graph": ("memory_create_entities",),
    "relate two entities in the knowledge graph": ("memory_create_relations",),
    "add observations about an entity": ("memory_add_observations",),
    "delete entities from the knowledge graph": ("memory_delete_entities",),
    "remove an observation from an entity": ("memory_delete_observations",),
    "delete a relation between entities": ("memory_delete_relations",),
    "read the whole knowledge graph": ("memory_read_graph",),
    "search the knowledge graph for nodes": ("memory_search_nodes",),
    "open nodes by name": ("memory_open_nodes",),
    # oci
    "which platforms does a container image support": ("oci_get_image_info",),
    "image manifest layers and sizes": ("oci_get_image_manifest",),
    "entrypoint and environment of a docker image": ("oci_get_image_config",),
    "list the tags of an image repository": ("oci_list_tags",),
}
