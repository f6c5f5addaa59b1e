/* cli_keys.c — `barista keys add TENANT`: a new random API key (32 bytes from
 * getrandom, as "sk-bar-" + 64 hex digits) and the keys-file entry to paste,
 * which holds only the key's SHA-256. `barista keys hash` prints the digest
 * of a key read from stdin (to move an existing key into the file). Not for:
 * loading the file (src/control/tenant.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "control/tenant.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: barista keys add TENANT   print a new API key and its keys-file entry\n"
               "       barista keys hash         print the key_sha256 of a key read from stdin\n\n"
               "The keys file (barista serve --keys FILE) stores only key_sha256; give the\n"
               "key itself to the tenant and keep no other copy. docs/TENANTS.md.\n");
}

int cli_keys_main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "add")) {
        const char *t = argv[2];
        if (!tenant_name_ok(t, strlen(t))) {
            fprintf(stderr,
                    "barista keys: tenant '%.63s' must be 1 to 63 characters of "
                    "[A-Za-z0-9._:@-]\n",
                    t);
            return 2;
        }
        uint8_t raw[32], d[32];
        char hex[65], key[80], dhex[65];
        if (tenant_random(raw)) {
            fprintf(stderr, "barista keys: getrandom failed\n");
            return 1;
        }
        tenant_hex(raw, 32, hex);
        snprintf(key, sizeof key, "sk-bar-%s", hex);
        tenant_sha256(key, strlen(key), d);
        tenant_hex(d, 32, dhex);
        printf("key: %s\n", key);
        printf("# paste under 'keys:' in the keys file, then send SIGHUP to barista serve:\n");
        printf("  - {key_sha256: %s, tenant: %s}\n", dhex, t);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "hash")) {
        char line[4096];
        if (!fgets(line, sizeof line, stdin)) {
            fprintf(stderr, "barista keys: no key on stdin\n");
            return 2;
        }
        size_t n = strcspn(line, "\r\n");
        uint8_t d[32];
        char dhex[65];
        tenant_sha256(line, n, d);
        tenant_hex(d, 32, dhex);
        printf("%s\n", dhex);
        return 0;
    }
    usage(stderr);
    return 2;
}
