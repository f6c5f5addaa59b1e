/* batch_store.c — blocking file-system steps and batch line parsing (see
 * batch_store.h). */
#include "batch/batch_store.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_p(const char *dir, bar_msg_t *msg)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s", dir);
    if (n <= 0 || (size_t)n >= sizeof tmp) return bar_fail(msg, BAR_ERR_INVALID, "path too long");
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) && errno != EEXIST)
            return bar_fail(msg, BAR_ERR_IO, "mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0700) && errno != EEXIST)
        return bar_fail(msg, BAR_ERR_IO, "mkdir %s: %s", tmp, strerror(errno));
    return 0;
}

int batch_store_open(const char *dir, bar_msg_t *msg)
{
    char p[PATH_MAX];
    int rc = mkdir_p(dir, msg);
    if (rc) return rc;
    snprintf(p, sizeof p, "%s/files", dir);
    if ((rc = mkdir_p(p, msg))) return rc;
    snprintf(p, sizeof p, "%s/batches", dir);
    return mkdir_p(p, msg);
}

static void fsync_dir_of(const char *path)
{
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s", path);
    char *slash = strrchr(d, '/');
    if (!slash) return;
    *slash = '\0';
    int fd = open(d[0] ? d : "/", O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int batch_store_write(const char *path, const void *p, size_t n, bar_msg_t *msg)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return bar_fail(msg, BAR_ERR_INVALID, "path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return bar_fail(msg, BAR_ERR_IO, "open %s: %s", tmp, strerror(errno));
    if (write_all(fd, p, n) || fsync(fd)) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return bar_fail(msg, BAR_ERR_IO, "write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return bar_fail(msg, BAR_ERR_IO, "rename %s: %s", path, strerror(e));
    }
    fsync_dir_of(path);
    return 0;
}

int batch_store_read(const char *path, buf_t *out, bar_msg_t *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bar_fail(msg, BAR_ERR_IO, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && buf_reserve(out, (size_t)st.st_size + 1)) {
        close(fd);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    char tmp[65536];
    for (;;) {
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return bar_fail(msg, BAR_ERR_IO, "read %s: %s", path, strerror(e));
        }
        if (r == 0) break;
        if (buf_append(out, tmp, (size_t)r)) {
            close(fd);
            return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        }
    }
    close(fd);
    return 0;
}

int batch_store_append(int fd, const void *p, size_t n, bar_msg_t *msg)
{
    if (write_all(fd, p, n) || fdatasync(fd))
        return bar_fail(msg, BAR_ERR_IO, "append: %s", strerror(errno));
    return 0;
}

int batch_store_trim(const char *path, buf_t *out, bar_msg_t *msg)
{
    buf_t b = {0};
    if (access(path, F_OK)) return 0;
    int rc = batch_store_read(path, &b, msg);
    if (rc) {
        buf_free(&b);
        return rc;
    }
    size_t keep = b.n;
    while (keep && b.p[keep - 1] != '\n')
        keep--;
    if (keep != b.n && truncate(path, (off_t)keep)) {
        buf_free(&b);
        return bar_fail(msg, BAR_ERR_IO, "truncate %s: %s", path, strerror(errno));
    }
    b.n = keep;
    if (out) rc = buf_append(out, b.p ? b.p : "", b.n) ? BAR_ERR_NOMEM : 0;
    buf_free(&b);
    return rc;
}

int batch_store_link(const char *src, const char *dst, bar_msg_t *msg)
{
    unlink(dst);
    if (!link(src, dst)) {
        fsync_dir_of(dst);
        return 0;
    }
    buf_t b = {0};
    int rc = batch_store_read(src, &b, msg);
    if (!rc) rc = batch_store_write(dst, b.p ? b.p : "", b.n, msg);
    buf_free(&b);
    return rc;
}

/* ---- lines ---- */

static int line_fail(const char **code, const char *c, char *why, size_t size, const char *text)
{
    *code = c;
    snprintf(why, size, "%s", text);
    return -1;
}

int batch_line_parse(const char *line, size_t n, const char *endpoint, batch_line_t *out,
                     const char **code, char *why, size_t why_size)
{
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(line, n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return line_fail(code, "invalid_json_line", why, why_size,
                         "This line is not a JSON object.");
    }
    int rc = -1;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "custom_id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(root, "method");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "url");
    cJSON *body = cJSON_GetObjectItemCaseSensitive(root, "body");
    if (cJSON_IsString(id) && id->valuestring[0] && strlen(id->valuestring) < sizeof out->custom_id)
        snprintf(out->custom_id, sizeof out->custom_id, "%s", id->valuestring);
    if (!out->custom_id[0])
        line_fail(code, "missing_required_parameter", why, why_size,
                  "'custom_id' must be a non-empty string of at most 127 bytes.");
    else if (!cJSON_IsString(method) || strcmp(method->valuestring, "POST"))
        line_fail(code, "invalid_value", why, why_size, "'method' must be \"POST\".");
    else if (!cJSON_IsString(url) || strcmp(url->valuestring, endpoint))
        snprintf(why, why_size, "'url' must be the batch's endpoint, \"%s\".", endpoint),
            *code = "invalid_url";
    else if (!cJSON_IsObject(body))
        line_fail(code, "invalid_value", why, why_size, "'body' must be a JSON object.");
    else {
        cJSON_DeleteItemFromObjectCaseSensitive(body, "stream");
        cJSON_DeleteItemFromObjectCaseSensitive(body, "stream_options");
        cJSON_DeleteItemFromObjectCaseSensitive(body, "priority"); /* lines run as batch */
        out->body = cJSON_PrintUnformatted(body);
        if (!out->body)
            line_fail(code, "server_error", why, why_size, "out of memory");
        else {
            out->body_len = strlen(out->body);
            rc = 0;
        }
    }
    cJSON_Delete(root);
    return rc;
}

int batch_result_custom_id(const char *line, size_t n, char out[128])
{
    out[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(line, n);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "custom_id");
    if (cJSON_IsString(id) && strlen(id->valuestring) < 128)
        snprintf(out, 128, "%s", id->valuestring);
    int res = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "response")) && out[0];
    cJSON_Delete(root);
    return res;
}

int batch_store_each_record(const char *dir, const char *what,
                            int (*take)(void *ud, const struct cJSON *o), void *ud, bar_msg_t *msg)
{
    DIR *d = opendir(dir);
    if (!d) return bar_fail(msg, BAR_ERR_IO, "cannot read %s", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json")) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
        buf_t b = {0};
        bar_msg_t m = {{0}};
        cJSON *o = NULL;
        if (!batch_store_read(path, &b, &m)) o = cJSON_ParseWithLength(b.p, b.n);
        if (take(ud, o) < 0)
            fprintf(stderr, "barista: skipping unreadable %s record %s\n", what, path);
        cJSON_Delete(o);
        buf_free(&b);
    }
    closedir(d);
    return 0;
}
